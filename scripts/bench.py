"""dcb's export benchmark: dcb against the bare read of the same query (the read
limit), the real mongodump, and gzip on the same bytes, all measured in one run.

    .venv/bin/python scripts/bench.py [--docs 1000000] [--runs 3]

Starts its own test server with on-disk storage, loads MES-like documents (~400 B,
createdAt spread over 10 days, indexed), builds release binaries, and reports for each
case the median wall time, CPU seconds (user+sys) and peak RSS of each process,
measured with wait4(2), and the ratios against the bare read and mongodump.
"""

import argparse
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(cmd, env=None):
    """Run cmd; return (wall s, cpu s, peak RSS MB, stdout)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    stdout = p.stdout.read().decode()
    stderr = p.stderr.read().decode()
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{stderr[-2000:]}")
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024.0, stdout


def median_of(runs, fn):
    results = [fn() for _ in range(runs)]
    return tuple(statistics.median(r[i] for r in results) for i in range(3)) + (results[-1][3],)


def tools():
    for d in [os.environ.get("DCB_MONGO_TOOLS"), os.path.join(ROOT, "target", "mongo-tools")]:
        if d and os.path.exists(os.path.join(d, "mongodump")):
            return d
    tarball = os.path.join(ROOT, "..", "shared", "peers", "mongo-tools-linux-x86_64.tar.gz")
    dest = os.path.join(ROOT, "target", "mongo-tools")
    os.makedirs(dest, exist_ok=True)
    with tarfile.open(tarball) as t:
        t.extractall(dest)
    return dest


def start_server(storage):
    p = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "testserver.py"), "--storage-path", storage],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    if not line.startswith("READY "):
        sys.exit("the test server did not start")
    return p, line.split()[1]


def load(uri, n):
    import pymongo
    coll = pymongo.MongoClient(uri).bench.api_logs
    coll.drop()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    rnd = random.Random(7)
    batch = []
    for i in range(n):
        batch.append({
            "createdAt": now - dt.timedelta(seconds=rnd.uniform(0, 10 * 86400)),
            "barcode": f"DC{rnd.randint(0, 10**12):012d}",
            "line": rnd.choice(["SMT-01", "SMT-02", "ASSY-A", "PACK-1"]),
            "station": rnd.choice(["AOI", "ICT", "FCT", "LABEL"]),
            "operator": f"op{rnd.randint(1, 120):03d}",
            "status": rnd.choice(["OK", "OK", "OK", "NG"]),
            "workOrder": f"WO{rnd.randint(100000, 999999)}",
            "qty": rnd.randint(1, 500),
            # Random text so compression works as on real data, not on repeats.
            "payload": "".join(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ") for _ in range(200)),
        })
        if len(batch) == 10000:
            coll.insert_many(batch, ordered=False)
            batch = []
    if batch:
        coll.insert_many(batch, ordered=False)
    coll.create_index("createdAt")
    return now


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "dcb", "--example", "bare_read"],
                   cwd=ROOT, check=True)
    dcb = os.path.join(ROOT, "target", "release", "dcb")
    bare = os.path.join(ROOT, "target", "release", "examples", "bare_read")
    td = tools()
    work = tempfile.mkdtemp(prefix="dcb-bench-")
    server, uri = start_server(os.path.join(work, "db"))
    try:
        t0 = time.monotonic()
        now = load(uri, args.docs)
        print(f"loaded {args.docs} documents in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        pol = os.path.join(work, "policies")
        os.makedirs(pol)
        # One day: [now-2d, now-1d), the same bounds for every tool.
        day_from, day_to = now - dt.timedelta(days=2), now - dt.timedelta(days=1)
        cases = {
            "whole collection": ("window: {initial: all, settle: 0s}", ["all"], None),
            "one day": (None, [str(int(day_from.timestamp() * 1000)), str(int(day_to.timestamp() * 1000))],
                        json.dumps({"createdAt": {"$gte": {"$date": day_from.isoformat().replace("+00:00", "Z")},
                                                  "$lt": {"$date": day_to.isoformat().replace("+00:00", "Z")}}})),
        }
        env = dict(os.environ, DCB_MONGODB_URI=uri, DCB_LOG="warn")
        rows = []
        for name, (window, bare_args, query) in cases.items():
            if window is None:
                # dcb's own window for [now-2d, now-1d): initial 2d back, settle 1d.
                lag = (dt.datetime.now(dt.timezone.utc) - now).total_seconds()
                window = f"window: {{initial: {int(2 * 86400 + lag)}s, settle: {int(86400 + lag)}s}}"
            with open(os.path.join(pol, "bench.yaml"), "w") as f:
                f.write(f"name: bench\nschedule: \"0 * * * *\"\ndatabase: bench\n{window}\n"
                        "collections: [api_logs]\nretention: 30d\n")
            out = os.path.join(work, "out")

            def run_dcb():
                shutil.rmtree(out, ignore_errors=True)
                return measure([dcb, "--policies", pol, "--backup-root", out, "run", "--policy", "bench", "--quiet"], env)

            def run_dump():
                cmd = [os.path.join(td, "mongodump"), "--uri", uri, "-d", "bench", "-c", "api_logs",
                       "--gzip", f"--archive={os.path.join(work, 'dump.archive')}", "--quiet"]
                if query:
                    cmd += ["--query", query]
                return measure(cmd)

            b = median_of(args.runs, lambda: measure([bare, uri, "bench", "api_logs", *bare_args]))
            d = median_of(args.runs, run_dcb)
            m = median_of(args.runs, run_dump)
            docs, nbytes = map(int, b[3].split())
            # gzip -6 on exactly the bytes dcb compressed.
            archive = [os.path.join(out, "bench", x) for x in os.listdir(os.path.join(out, "bench")) if x.endswith(".tar.gz")][0]
            with tarfile.open(archive) as t:
                t.extract("bench/api_logs.bson", os.path.join(work, "x"))
            bson_path = os.path.join(work, "x", "bench", "api_logs.bson")
            g = median_of(args.runs, lambda: measure(["sh", "-c", f"gzip -6 -c {bson_path} > /dev/null"]))
            with open(archive.replace(".tar.gz", ".manifest.json")) as f:
                exported = json.load(f)["documents"]
            rows.append((name, docs, exported, nbytes, b, d, m, g))

        print(f"\n{args.docs:,} documents, median of {args.runs}; wall and CPU in seconds, RSS in MB\n")
        print("| case | tool | docs | wall | docs/s | MB/s | CPU | peak RSS |")
        print("|---|---|---|---|---|---|---|---|")
        for name, docs, exported, nbytes, b, d, m, g in rows:
            for tool, r, n in [("bare read", b, docs), ("dcb run", d, exported), ("mongodump --gzip", m, docs)]:
                print(f"| {name} | {tool} | {n:,} | {r[0]:.2f} | {n / r[0]:,.0f} | {nbytes / 1e6 / r[0]:.1f} | {r[1]:.2f} | {r[2]:.0f} |")
            print(f"| {name} | gzip -6 (same bytes) | | {g[0]:.2f} | | {nbytes / 1e6 / g[0]:.1f} | {g[1]:.2f} | {g[2]:.0f} |")
        print("\n| case | dcb/bare wall | dcb/mongodump wall | dcb CPU beyond bare / gzip CPU | dcb peak RSS |")
        print("|---|---|---|---|---|")
        for name, docs, exported, nbytes, b, d, m, g in rows:
            extra = (d[1] - b[1]) / g[1] if g[1] > 0 else float("nan")
            print(f"| {name} | {d[0] / b[0]:.2f}x | {d[0] / m[0]:.2f}x | {extra:.2f}x | {d[2]:.0f} MB |")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
