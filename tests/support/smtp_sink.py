"""A real SMTP server on loopback for tests (aiosmtpd). Prints `READY <port>`, writes
each message as a JSON line to the file given, accepts AUTH PLAIN/LOGIN for the given
user and password without TLS (loopback only), and exits when stdin closes."""

import json
import socket
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    out_path, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            with lock, open(out_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf-8", "replace"),
                    "authenticated": session.authenticated,
                }) + "\n")
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and \
            auth_data.login.decode() == user and auth_data.password.decode() == password
        return AuthResult(success=ok)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(Handler(), hostname="127.0.0.1", port=port,
                            authenticator=authenticator, auth_require_tls=False)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
