"""Start a SecantusDB test server on a free loopback port and keep it alive
exactly as long as whoever started us.

Prints one line, `READY <uri>`, once the server answers `hello`; stops the
server when standard input closes (the parent exited, even by kill -9) or on
SIGTERM/SIGINT. Extra arguments are passed to secantusd-py (e.g. --auth).

    python scripts/testserver.py [--port P] [--storage-path DIR] [-- extra args]
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_binary() -> str:
    here = os.path.dirname(sys.executable)
    for name in ("secantusd-py", "secantusd-py.exe"):
        candidate = os.path.join(here, name)
        if os.path.exists(candidate):
            return candidate
    found = shutil.which("secantusd-py")
    if not found:
        sys.exit("secantusd-py not found: run scripts/setup-test-env.sh")
    return found


def wait_ready(uri: str, proc: subprocess.Popen, timeout: float) -> None:
    import pymongo

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"test server exited early with code {proc.returncode}")
        try:
            client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
            client.admin.command("hello")
            client.close()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last = exc
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"test server did not answer hello within {timeout}s: {last}")


def wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"test server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"test server did not listen on {port} within {timeout}s")


def listens_on(pid: int, port: int):
    """Whether process `pid` holds the socket listening on 127.0.0.1:`port`; None when
    this system cannot tell (no /proc)."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            if not os.path.exists(table):
                continue
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(f"socket:[{inode}]")
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
        except OSError:
            pass
    return False


def start(args):
    """Start the server on a free port; the process and the port. Another process can
    take the port between choosing it and binding it (tests run in parallel): the
    server then exits, or another server answers on the port. Either way, try again on
    another port."""
    for _ in range(5):
        port = args.port or free_port()
        cmd = [server_binary(), "--host", "127.0.0.1", "--port", str(port),
               "--storage-path", args.storage_path, "--log-level", "WARNING", *args.extra]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        tls = "--tls-cert-file" in args.extra
        uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        try:
            if tls:
                # The readiness probe would need the test's certificates: wait for the port.
                wait_listening(port, proc, args.timeout)
            else:
                wait_ready(uri, proc, args.timeout)
        except SystemExit:
            if args.port or proc.poll() is None:
                raise
            continue
        mine = listens_on(proc.pid, port)
        if mine is None:
            # No /proc: a server that lost the race exits within moments.
            time.sleep(2)
            mine = proc.poll() is None
        if mine:
            return proc, uri
        proc.kill()
        proc.wait()
        if args.port:
            sys.exit(f"port {port} is taken by another process")
    sys.exit("could not start the test server on a free port in 5 attempts")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--storage-path", default=":memory:")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--no-stdin-watch", action="store_true",
                        help="keep running until signalled (for the demo)")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()

    proc, uri = start(args)

    def stop(*_):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print(f"READY {uri}", flush=True)

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except Exception:  # noqa: BLE001
            pass
        stop()

    if not args.no_stdin_watch:
        threading.Thread(target=watch_stdin, daemon=True).start()
    proc.wait()
    os._exit(proc.returncode or 0)


if __name__ == "__main__":
    main()
