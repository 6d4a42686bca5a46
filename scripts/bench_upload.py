"""dcb's upload benchmark: `dcb run` writing an export to an S3-compatible bucket (moto
on loopback) against writing the same export to the local backup root only, and the
S3 part of it against a plain boto3 `upload_file` of the finished archive; all
measured side by side in one run, on the same data.

    .venv/bin/python scripts/bench_upload.py [--docs 1000000] [--runs 3] [--level 6]
                                             [--lease-docs 2000] [--lease-runs 5]
                                             [--no-build]

It starts its own SecantusDB test server (on-disk storage in a temporary folder) and
S3 server (moto, `python -m moto.server` on 127.0.0.1, no authentication),
loads --docs MES-like documents (scripts/bench.py's generator), builds
`target/release/dcb`, then runs, --runs times and interleaved (1, 2, 3, 4, 1, ...):

1. `dcb run`, target `local` only (the backup root);
2. `dcb run`, target `offsite` only (the bucket): dcb writes the archive to its spool
   (`<backupRoot>/.spool`), then uploads that file in 8 MiB parts, two in flight,
   put-if-absent, then puts the manifest. The upload is from the spooled file: it
   starts when the export is finished, it is not streamed while exporting;
3. `dcb run`, targets `local` and `offsite` (the archive written once, uploaded, then
   moved into the backup root);
4. `upload_file` (boto3, its default TransferConfig: 8 MiB parts, up to 10 threads)
   of the archive case 1 wrote in the same round, to the same server, in a Python
   process of its own (interpreter start and `import boto3` included).

Cases 1 to 3 run with `lock: local`, so no lease is taken. Each run exports the whole
collection (`initial: all`) into a fresh backup root and a fresh prefix in the bucket
(the bucket's manifests would otherwise give the run a watermark), and every object
is deleted again after the round. Then the lease's own cost: a small collection
(--lease-docs) exported to the bucket --lease-runs times with `lock: local` and with
`lock: mongodb`, interleaved, where a few ms show.

Every figure is the kernel's accounting of the measured process (wall, CPU = user +
system, peak RSS, from wait4(2) through scripts/bench.py's helper); the median of the
runs, and peak RSS also as the largest of the runs. The S3 server's own CPU during
each run is read from /proc (it shares the 2 cores with the measured process). Each
uploaded object's size is checked against the archive written locally.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402 - the measuring helper, the test server and the data
from bench import COLL, DB, ROOT, Server, interleaved, load, log, measure  # noqa: E402

BUCKET = "dcb-bench"
SMALL = "small_logs"
RSS_TARGET_MB = 64

# boto3's plain upload of one file: what a user would run by hand.
UPLOAD_FILE = r"""
import os, sys, boto3
from botocore.config import Config
path, endpoint, bucket, key = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
s3.upload_file(path, bucket, key)
"""


class S3Server:
    """moto's server on a free loopback port, started as `python -m moto.server` (not
    through its console script, so a venv whose scripts point elsewhere still works),
    in a process group of its own that stop() ends. No authentication: any key pair is
    accepted, so moto spends nothing on signatures (a real S3 checks them, at no cost
    to the client)."""

    def __init__(self, log_path):
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True)
        self.moto_pid = self.proc.pid
        self.endpoint = f"http://127.0.0.1:{port}"
        self.key, self.secret = "bench", "bench-secret"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"moto exited with code {self.proc.returncode} "
                                   f"(see {log_path})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto did not listen on {port} in 60 s") from None
                time.sleep(0.1)
        import boto3
        from botocore.config import Config
        self.s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                               aws_access_key_id=self.key, aws_secret_access_key=self.secret,
                               config=Config(s3={"addressing_style": "path"}))

    def cpu(self):
        """moto_server's CPU seconds so far (user + system), or None off Linux."""
        if self.moto_pid is None:
            return None
        try:
            with open(f"/proc/{self.moto_pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def objects(self, prefix):
        """{key: size} under prefix."""
        out = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                      Prefix=prefix):
            out.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return out

    def clear(self):
        """Delete every object and incomplete upload, so moto frees them."""
        for key in self.objects(""):
            self.s3.delete_object(Bucket=BUCKET, Key=key)
        for u in self.s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            self.s3.abort_multipart_upload(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(5)
        self.log.close()


class Upload:
    def __init__(self, args, work, uri, dcb, s3):
        self.args, self.work, self.uri, self.dcb, self.s3 = args, work, uri, dcb, s3
        self.seq = 0
        self.warned_spool = False
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("DCB_", "AWS_"))}
        self.env.update(DCB_MONGODB_URI=uri, DCB_LOG="warn",
                        AWS_ACCESS_KEY_ID=s3.key, AWS_SECRET_ACCESS_KEY=s3.secret)

    def site(self, policy, coll, targets, lock):
        """A fresh folder with dcb.yaml, the policy and an empty backup root; the
        bucket prefix is new too. Returns (folder, prefix)."""
        self.seq += 1
        site = os.path.join(self.work, f"site{self.seq}")
        os.makedirs(os.path.join(site, "policies"))
        prefix = f"run{self.seq}/"
        with open(os.path.join(site, "dcb.yaml"), "w") as f:
            f.write(f"backupRoot: backups\npoliciesDir: policies\nlock: {lock}\n"
                    f"targets:\n  offsite:\n    type: s3\n    bucket: {BUCKET}\n"
                    f"    prefix: {prefix}\n    endpoint: {self.s3.endpoint}\n"
                    f"    region: us-east-1\n    pathStyle: true\n"
                    f"defaultTargets: [{', '.join(targets)}]\n")
        with open(os.path.join(site, "policies", f"{policy}.yaml"), "w") as f:
            f.write(f"name: {policy}\nschedule: \"0 * * * *\"\ndatabase: {DB}\n"
                    f"timeField: createdAt\nwindow:\n  initial: all\n  settle: 0s\n"
                    f"collections: [{coll}]\nretention: 30d\n"
                    f"compression:\n  level: {self.args.level}\n")
        return site, prefix

    def with_moto_cpu(self, fn):
        before = self.s3.cpu()
        r = fn()
        after = self.s3.cpu()
        r["moto_cpu"] = after - before if before is not None and after is not None else None
        return r

    def run_dcb(self, policy, coll, targets, lock="local"):
        site, prefix = self.site(policy, coll, targets, lock)
        r = self.with_moto_cpu(lambda: measure(
            [self.dcb, "--config", os.path.join(site, "dcb.yaml"), "run", "--policy", policy,
             "--quiet"], env=self.env, cwd=site))
        ended = time.time()
        root = os.path.join(site, "backups")
        local = {}
        pdir = os.path.join(root, policy)
        if os.path.isdir(pdir):
            local = {x: os.path.getsize(os.path.join(pdir, x)) for x in os.listdir(pdir)
                     if not x.startswith(".")}
        remote = ({k[len(prefix) + len(policy) + 1:]: v
                   for k, v in self.s3.objects(prefix + policy + "/").items()}
                  if "offsite" in targets else {})
        # What the run must have committed, and nothing half-written left behind.
        for where, objs in (("local", local), ("offsite", remote)):
            if where not in targets:
                continue
            archives = [k for k in objs if k.endswith(".tar.gz")]
            manifests = [k for k in objs if k.endswith(".manifest.json")]
            if len(archives) != 1 or len(manifests) != 1:
                raise RuntimeError(f"{where} after `dcb run` ({targets}): {sorted(objs)}")
        if "local" in targets and "offsite" in targets:
            a = next(k for k in local if k.endswith(".tar.gz"))
            if remote.get(a) != local[a]:
                raise RuntimeError(f"{a}: {local[a]} bytes here, {remote.get(a)} in the bucket")
        objs = local if "local" in targets else remote
        archive = next(k for k in objs if k.endswith(".tar.gz"))
        manifest = next(k for k in objs if k.endswith(".manifest.json"))
        if "local" in targets:
            with open(os.path.join(pdir, manifest)) as f:
                man = json.load(f)
        else:
            body = self.s3.s3.get_object(Bucket=BUCKET, Key=f"{prefix}{policy}/{manifest}")
            man = json.loads(body["Body"].read())
        # What the run left in its spool (reported: a finished run should leave nothing).
        spool = os.path.join(root, ".spool")
        left = [os.path.join(d, f) for d, _, fs in os.walk(spool) for f in fs]
        r["spool_left"] = sum(os.path.getsize(f) for f in left)
        # The run's tail: from the end of the archive's writing (the manifest's
        # finishedAt, stamped as the archive's last members are written, on this
        # machine's clock) to the process's end. It holds the SHA-256 re-read of the
        # finished file, the upload and the manifest put. (A file's mtime would not do:
        # a bucket-only run removes its spooled file.)
        written = dt.datetime.fromisoformat(man["finishedAt"].replace("Z", "+00:00"))
        r["tail"] = ended - written.timestamp()
        if left and not self.warned_spool:
            self.warned_spool = True
            log(f"  left in the spool after `dcb run` ({targets}): "
                + ", ".join(f"{os.path.relpath(f, root)} ({os.path.getsize(f):,} B)"
                            for f in left))
        if "local" not in targets and local:
            log(f"  in the backup root after an S3-only run: {sorted(local)}")
        return {**r, "site": site,
                "archive_path": os.path.join(pdir, archive) if "local" in targets else None,
                "archive_bytes": objs[archive], "docs": man["documents"], "bson": man["bytes"]}

    def run_upload_file(self, path):
        key = f"boto3/{self.seq}/{os.path.basename(path)}"
        r = self.with_moto_cpu(lambda: measure(
            [sys.executable, "-c", UPLOAD_FILE, path, self.s3.endpoint, BUCKET, key],
            env=self.env, cwd=self.work))
        size = self.s3.objects(key).get(key)
        if size != os.path.getsize(path):
            raise RuntimeError(f"upload_file: {size} bytes in the bucket, "
                               f"{os.path.getsize(path)} here")
        return {**r, "archive_bytes": size}


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def run_main(u):
    """The four cases, interleaved round by round; case 4 uploads the archive case 1
    wrote in the same round."""
    log(f"cases 1-4, {u.args.runs} runs each, interleaved")
    names = ["local", "s3", "local+s3", "upload_file"]
    raw = {n: [] for n in names}
    for i in range(u.args.runs):
        round_ = {}
        round_["local"] = u.run_dcb("bench", COLL, ["local"])
        round_["s3"] = u.run_dcb("bench", COLL, ["offsite"])
        round_["local+s3"] = u.run_dcb("bench", COLL, ["local", "offsite"])
        round_["upload_file"] = u.run_upload_file(round_["local"]["archive_path"])
        for n in names:
            r = round_[n]
            raw[n].append(r)
            moto = f", moto {r['moto_cpu']:.2f} s CPU" if r.get("moto_cpu") is not None else ""
            log(f"  run {i + 1}/{u.args.runs} {n}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, "
                f"{r['rss']:.0f} MB{moto}")
        for n in names[:3]:
            shutil.rmtree(round_[n]["site"], ignore_errors=True)
        u.s3.clear()
    return raw


def run_lease(u):
    log(f"lease cost: {u.args.lease_docs:,} documents to the bucket, lock local vs mongodb, "
        f"{u.args.lease_runs} runs each")

    def once(lock):
        def fn():
            r = u.run_dcb("small", SMALL, ["offsite"], lock=lock)
            shutil.rmtree(r["site"], ignore_errors=True)
            return r
        return fn

    res = interleaved(u.args.lease_runs, {"lock local": once("local"),
                                         "lock mongodb": once("mongodb")})
    u.s3.clear()
    return res


def summary(rs):
    m = bench.median(rs)
    m["moto_cpu"] = med(rs, "moto_cpu")
    m["tail"] = med(rs, "tail")
    m["walls"] = [r["wall"] for r in rs]
    m["rsss"] = [r["rss"] for r in rs]
    return m


def report(args, raw, lease, machine):
    lines = []
    p = lines.append
    s = {n: summary(rs) for n, rs in raw.items()}
    loc = s["local"]
    mb = loc["archive_bytes"] / 1e6
    p(f"{loc['docs']:,} documents ({loc['bson'] / 1e6:.0f} MB of BSON), compression level "
      f"{args.level}, a {mb:.1f} MB archive; median of {args.runs} interleaved runs (each "
      f"figure separately), peak RSS also as the largest of the runs. MB/s = MB of archive "
      f"per wall second. moto CPU = the S3 server's CPU seconds during the run. {machine}")
    p("")
    p("| case | wall s | MB/s | CPU s | peak RSS MB | max peak RSS MB | moto CPU s | "
      "tail s | wall vs local |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    labels = {"local": "1. dcb run, target local only",
              "s3": "2. dcb run, target S3 only (spooled, then uploaded)",
              "local+s3": "3. dcb run, targets local + S3",
              "upload_file": "4. boto3 upload_file of case 1's archive"}
    for n, label in labels.items():
        x = s[n]
        moto = f"{x['moto_cpu']:.2f}" if x["moto_cpu"] is not None else "-"
        p(f"| {label} | {x['wall']:.2f} | {mb / x['wall']:.1f} | {x['cpu']:.2f} | "
          f"{x['rss']:.0f} | {x['rss_max']:.0f} | {moto} | "
          f"{'-' if x['tail'] is None else format(x['tail'], '.2f')} | "
          f"{x['wall'] / loc['wall']:.2f}x |")
    p("")
    p("Wall seconds run by run, in the order they ran: " + "; ".join(
        f"{n} " + "/".join(f"{w:.2f}" for w in s[n]["walls"]) for n in labels) + ".")
    p("")
    # The upload part of dcb's S3 runs, round by round (the same round's case 1), then
    # the median of those differences.
    up2 = [b["wall"] - a["wall"] for a, b in zip(raw["local"], raw["s3"])]
    up3 = [b["wall"] - a["wall"] for a, b in zip(raw["local"], raw["local+s3"])]
    bw = s["upload_file"]["wall"]
    d2, d3 = statistics.median(up2), statistics.median(up3)
    t1, t2, t3 = s["local"]["tail"], s["s3"]["tail"], s["local+s3"]["tail"]
    tails = []
    if None not in (t1, t2):
        tails.append(("dcb's upload, measured inside the run (case 2's tail - case 1's tail) "
                      "vs boto3 upload_file", f"{t2:.2f} - {t1:.2f} = {t2 - t1:.2f} s "
                      f"({mb / (t2 - t1):.1f} MB/s) vs {bw:.2f} s: {(t2 - t1) / bw:.2f}x", ""))
    if None not in (t1, t3):
        tails.append(("the same for local + S3 (case 3's tail - case 1's tail)",
                      f"{t3:.2f} - {t1:.2f} = {t3 - t1:.2f} s vs {bw:.2f} s: "
                      f"{(t3 - t1) / bw:.2f}x", ""))
    rows = [
        ("S3 only vs local only (wall)", f"{s['s3']['wall']:.2f} s vs {loc['wall']:.2f} s: "
         f"{s['s3']['wall'] / loc['wall']:.2f}x", ""),
        ("local + S3 vs local only (wall)", f"{s['local+s3']['wall']:.2f} s vs "
         f"{loc['wall']:.2f} s: {s['local+s3']['wall'] / loc['wall']:.2f}x", ""),
        ("dcb's upload part by wall (case 2 - case 1, per round) vs boto3 upload_file",
         f"{d2:.2f} s ({mb / d2:.1f} MB/s) vs {bw:.2f} s ({mb / bw:.1f} MB/s): {d2 / bw:.2f}x "
         f"(rounds: " + ", ".join(f"{d:.2f}" for d in up2) + ")", ""),
        ("the same for local + S3 (case 3 - case 1)",
         f"{d3:.2f} s vs {bw:.2f} s: {d3 / bw:.2f}x (rounds: "
         + ", ".join(f"{d:.2f}" for d in up3) + ")", ""),
    ]
    rows[2:2] = tails
    s3_runs = [(f"case {i}", r) for i, n in ((2, "s3"), (3, "local+s3")) for r in raw[n]]
    if lease:
        s3_runs += [(f"lease case, {k}", r) for k, r in lease.items()]
    worst_name, worst = max(((name, r.get("rss_max", r["rss"])) for name, r in s3_runs),
                            key=lambda x: x[1])
    rows.append((f"dcb peak RSS < {RSS_TARGET_MB} MB in every S3 run",
                 f"largest {worst:.0f} MB ({worst_name}); cases 2 and 3 run by run: "
                 + "/".join(f"{r['rss']:.0f}" for r in raw["s3"]) + " and "
                 + "/".join(f"{r['rss']:.0f}" for r in raw["local+s3"]) + " MB",
                 "**met**" if worst < RSS_TARGET_MB else "**missed**"))
    for i, n in ((2, "s3"), (3, "local+s3")):
        left = [r["spool_left"] for r in raw[n]]
        rows.append((f"left in `<backupRoot>/.spool` after a successful run (case {i})",
                     "nothing" if not any(left) else
                     "/".join(f"{x / 1e6:.1f}" for x in left) + " MB, run by run",
                     "" if not any(left) else "**a full copy of the archive stays behind**"))
    p("| comparison | measured | |")
    p("|---|---|---|")
    for r in rows:
        p(f"| {r[0]} | {r[1]} | {r[2]} |")
    if lease:
        lo, lm = lease["lock local"], lease["lock mongodb"]
        p("")
        p(f"Lease cost: {lo['docs']:,} documents ({lo['archive_bytes'] / 1e3:.0f} kB archive) "
          f"to the bucket, median of {args.lease_runs} interleaved runs.")
        p("")
        p("| run | wall s | CPU s | peak RSS MB | max peak RSS MB |")
        p("|---|---:|---:|---:|---:|")
        for name, x in (("dcb run, S3 only, lock: local", lo),
                        ("dcb run, S3 only, lock: mongodb (lease taken, confirmed, released)",
                         lm)):
            p(f"| {name} | {x['wall']:.3f} | {x['cpu']:.3f} | {x['rss']:.0f} | "
              f"{x['rss_max']:.0f} |")
        p(f"| difference (the lease) | {lm['wall'] - lo['wall']:+.3f} | "
          f"{lm['cpu'] - lo['cpu']:+.3f} | | |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000, help="documents to load (default 1M)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each case; the median is reported")
    ap.add_argument("--level", type=int, default=6, help="dcb's compression level")
    ap.add_argument("--lease-docs", type=int, default=2000,
                    help="documents of the lease-cost case (0: skip it)")
    ap.add_argument("--lease-runs", type=int, default=5, help="runs of each lease-cost case")
    ap.add_argument("--no-build", action="store_true", help="use the binary already built")
    ap.add_argument("--dcb", help="this dcb binary instead of building target/release/dcb")
    args = ap.parse_args()

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    if args.dcb:
        dcb = os.path.abspath(args.dcb)
    else:
        if not args.no_build:
            log("building the release binary")
            subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "dcb"],
                           cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        dcb = os.path.join(target, "release", "dcb")

    work = tempfile.mkdtemp(prefix="dcb-bench-upload-")
    server = s3 = None
    t0 = time.monotonic()
    try:
        server = Server(os.path.join(work, "db"))
        log(f"test server at {server.uri}")
        s3 = S3Server(os.path.join(work, "s3server.log"))
        s3.s3.create_bucket(Bucket=BUCKET)
        log(f"S3 server at {s3.endpoint} (moto pid {s3.moto_pid})")
        import pymongo
        client = pymongo.MongoClient(server.uri)
        end_ms = int(time.time() * 1000)
        load(client, COLL, args.docs, end_ms, seed=7)
        if args.lease_docs:
            load(client, SMALL, args.lease_docs, end_ms, seed=11)
        client.close()
        u = Upload(args, work, server.uri, dcb, s3)
        raw = run_main(u)
        lease = run_lease(u) if args.lease_docs else None
        import moto
        import boto3
        machine = (f"moto {moto.__version__}, boto3 {boto3.__version__}, Python "
                   f"{sys.version.split()[0]}; {os.cpu_count()} cores; "
                   f"{time.monotonic() - t0:.0f} s in all.")
        print(report(args, raw, lease, machine))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    except Exception:
        if s3 is not None:
            # moto's log says why it refused a request (it goes with `work`).
            with contextlib.suppress(OSError), open(s3.log.name, "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            log(f"the S3 server's log ends with:\n{tail}")
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if s3 is not None:
            s3.stop()
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
