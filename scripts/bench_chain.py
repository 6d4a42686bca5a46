"""dcb's chain benchmark (issue 12): what a full costs against today's whole-collection
export and `mongodump`, what recording deletions costs an incremental run of one day
(reading the collection's change stream, capturing updated documents by `_id`) against
today's one-day export of the same window and `mongodump --query`, and what a restore
as of a time (a full and its incremental) costs against a plain restore of one
whole-collection archive and `mongorestore`; all measured side by side in one run.

    .venv/bin/python scripts/bench_chain.py [--docs 1000000] [--runs 3] [--level 6]
                                            [--no-build] [--no-restore]
                                            [--allow-missed-changes]

It starts its own SecantusDB test server (on-disk storage in a temporary folder) with
an oplog large enough for the whole load (`--oplog-max-entries`, and a retention of 30
days, so no history is lost while the benchmark runs), builds `target/release/dcb`,
and prepares the data in the order a chain sees it:

1. --docs x 90% MES-like documents (the shape of scripts/bench.py's), `createdAt`
   uniform over the 9 days before the last day `[end - 1d, end)`, then the
   `createdAt` index;
2. the chain's full, once, into a template backup root (a policy with `full: 7d`);
3. after it, the last day: --docs x 10% documents with `createdAt` in
   `[end - 1d, end)`, and the churn of that day, spread among the inserts: 1% of the
   day's count of old documents deleted, 0.5% of the old documents updated (`status`
   and `qty` set; `createdAt` untouched).

Case 1, a full against the whole-collection export: `dcb run` of a `full: 7d` policy
with no archives yet (a fresh backup root each run: the run is a full) against a
policy without `full` and `window: {initial: all, settle: 0s}` (a fresh root each
run) and `mongodump --gzip --archive` of the collection, on the collection as it
stands after step 3. (mongodump is found as scripts/bench.py finds it.)

Case 2, one day: the chain's incremental after the full against today's export of
the same day with no `full`. Before each chain run the template root is copied to a
fresh folder, so every run reads the same changes from the same cut. The chain's
window is the one-day window: the full's watermark minus `overlap` (written in ms)
is `end - 1d`, and `settle` (in ms, written just before the run) puts its end at
`end`. The baseline is a policy without `full` whose `initial` and `settle` (in ms,
as in scripts/bench.py) give the same window, in a fresh root, with the daily count
of untimed documents already done (as for the chain run, whose full counted them);
it also runs as the first run of a day (the count included). Rows: the chain with
`captureUpdates: true` (the default) and `false`, and `mongodump --query` of the day.

Case 3 (unless --no-restore), restore into an empty database: `dcb restore --until`
(a time after the chain's incremental) of the full and one incremental, against
`dcb restore` of the whole-collection export and `mongorestore` of mongodump's archive
(both taken after the last day, so all three restore the same documents). Each
restore is checked: the document count, none of the deleted documents, every updated
one as updated, the `createdAt` index.

Before the timed runs, one run of each is checked against what was loaded: the
window's documents are the day's inserts for every variant; the chain's archive also
holds the updated documents (captured) and a deletions member with exactly the
deleted `_id`s; each chain run must be an incremental (`kind: incremental`) with
`changes.history.state == complete`, or the benchmark stops with an error. A chain
run that records fewer deletions or captures fewer updates than the load made stops
it too, unless --allow-missed-changes, which reports the timings with the shortfall.

Each variant runs --runs times, interleaved; each figure is the median of its runs
(wall seconds, CPU seconds and peak RSS of the `dcb` process, from wait4(2), with
scripts/bench.py's `measure`). Last, the parts of the chain's extra work are timed
alone with pymongo against the same server, with the server's CPU: the change-stream
read from the full's resume token with dcb's filters (with and without updates) to
the end (until an empty batch leaves the resume token where it was), and with no
filter; the captured documents read by `_id` in
batches of 1,000; the day's window read. They show where the time goes, and give
the floor of a chain run on this server: today's run plus those reads.

The server and every temporary file are removed at the end, also on error or Ctrl-C.
"""

import argparse
import base64
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (scripts/bench.py: measure, median, interleaved, Server, ...)
from bench import COLL, DAY_MS, DB, ROOT, interleaved, measure  # noqa: E402

# Documents of the load keep this far from the window's bounds, so a few ms of drift
# between the bounds a policy asks for and the ones dcb computes cannot change the
# window's documents (there are none within a minute of either bound).
MARGIN_MS = 60_000
OPLOG_RETENTION_S = 30 * 86_400


def log(msg):
    print(f"[bench-chain {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# Server and data


class Server(bench.Server):
    """scripts/bench.py's test server, with extra arguments for secantusd-py."""

    def __init__(self, storage, extra):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "scripts", "testserver.py"),
             "--storage-path", storage, "--", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the test server did not start: {line!r}")
        self.uri = line.split()[1]


def document(rnd, created_ms):
    """One MES-like document, the shape of scripts/bench.py's `load` (~430 B of BSON)."""
    from bson.datetime_ms import DatetimeMS

    return {
        "createdAt": DatetimeMS(created_ms),
        "barcode": f"DC{rnd.randrange(10**12):012d}",
        "line": rnd.choice(("SMT-01", "SMT-02", "ASSY-A", "PACK-1")),
        "station": rnd.choice(("AOI", "ICT", "FCT", "LABEL")),
        "operator": f"op{rnd.randint(1, 120):03d}",
        "status": rnd.choice(("OK", "OK", "OK", "NG")),
        "workOrder": f"WO{rnd.randint(100000, 999999)}",
        "qty": rnd.randint(1, 500),
        "measure": {"temp": round(rnd.uniform(18, 35), 2),
                    "voltage": round(rnd.uniform(3.2, 3.4), 3),
                    "current": round(rnd.uniform(0.1, 0.2), 4)},
        "payload": "".join(rnd.choices(bench.ALPHABET, k=200)),
    }


def insert(coll, rnd, n, lo_ms, hi_ms, between=None):
    """n documents with createdAt uniform in [lo_ms, hi_ms), in batches of 10,000;
    `between(i)` runs after batch i. Returns their `_id`s."""
    ids = []
    t0 = time.monotonic()
    batch = []
    for i in range(n):
        batch.append(document(rnd, lo_ms + rnd.randrange(hi_ms - lo_ms)))
        if len(batch) == 10_000 or i == n - 1:
            coll.insert_many(batch, ordered=False)
            ids.extend(d["_id"] for d in batch)
            batch = []
            if between:
                between(len(ids))
            if len(ids) % 200_000 == 0:
                log(f"  {len(ids):,} documents ({len(ids) / (time.monotonic() - t0):,.0f}/s)")
    return ids


# ---------------------------------------------------------------------------------
# Archives


def manifests(root, policy):
    pdir = os.path.join(root, policy)
    out = []
    for name in sorted(os.listdir(pdir)):
        if name.endswith(".manifest.json"):
            with open(os.path.join(pdir, name)) as f:
                out.append(json.load(f))
    return out


def newest_manifest(root, policy):
    return max(manifests(root, policy), key=lambda m: m["startedAt"])


def members(root, policy, man):
    """{member path: bytes} of the archive `man` describes (small archives only)."""
    with tarfile.open(os.path.join(root, policy, man["archive"])) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}


def ids_of(data):
    import bson

    return [d["_id"] for d in bson.decode_all(data)]


def iso_ms(text):
    """Milliseconds since the epoch (floor) of an RFC 3339 UTC time, to the nanosecond."""
    import datetime as dt

    head, _, frac = text.rstrip("Z").partition(".")
    t = dt.datetime.fromisoformat(head).replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * 1000 + int((frac + "000")[:3])


def clone(src, dst):
    """A copy of a backup root: archives hard-linked (dcb never writes to a committed
    archive), everything else copied."""
    def copy(s, d):
        if s.endswith(".tar.gz"):
            os.link(s, d)
        else:
            shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=copy)


# ---------------------------------------------------------------------------------
# The runs


class ChainBench(bench.Bench):
    def __init__(self, args, work, uri, dcb, tools):
        super().__init__(args, work, uri, dcb, None, None, tools)
        self.extra = {}  # policy name -> extra top-level lines of its YAML

    def write_policy(self, name, collections, window, concurrency=None):
        super().write_policy(name, collections, window, concurrency)
        if self.extra.get(name):
            with open(os.path.join(self.policies, f"{name}.yaml"), "a") as f:
                f.write(self.extra[name])

    def dcb_cmd(self, root, policy):
        return [self.dcb, "--policies", self.policies, "--backup-root", root,
                "run", "--policy", policy, "--quiet"]

    def run_in(self, root, policy, window):
        self.write_policy(policy, [COLL], window)
        r = measure(self.dcb_cmd(root, policy), env=self.env, cwd=self.work)
        r["root"] = root
        return r


def check_incremental(man):
    ch = man.get("changes") or {}
    state = (ch.get("history") or {}).get("state")
    if man.get("kind") != "incremental" or state != "complete":
        raise RuntimeError(
            f"the chain run was not an incremental with complete history: kind "
            f"{man.get('kind')!r}, history {ch.get('history')!r} ({man['archive']}); "
            f"is the server's oplog large enough?")


def run_restores(b, template, chain_window, dump_path, total, deleted, n_updated):
    """The collection as it stands after the last day, restored three ways into an
    empty database: `dcb restore --until` of the chain (the full, then the incremental
    with its deletions applied and its captured documents), `dcb restore` of the
    whole-collection export (one archive of every document, no `full`), and
    `mongorestore --gzip --archive` of mongodump's archive of the collection. Each
    target is dropped before and after its run and checked in between: every
    document, none of the deleted ones, the updated ones as updated, and the
    `createdAt` index."""
    import pymongo

    log("case 3: restore as of a time (chain) against a plain restore")
    # The chain: the template's full and one incremental, in a root of its own.
    chain_root = os.path.join(b.work, "restore-chain")
    clone(template, chain_root)
    b.extra["chain"] = "full: 7d\ncaptureUpdates: true\n"
    b.run_in(chain_root, "chain", chain_window())
    check_incremental(newest_manifest(chain_root, "chain"))
    until = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
    # The whole-collection export, out of fresh_root()'s way.
    r = b.run_dcb("whole", [COLL], lambda: "  initial: all\n  settle: 0s\n")
    whole_root = os.path.join(b.work, "restore-whole")
    os.replace(r["root"], whole_root)

    client = pymongo.MongoClient(b.uri)
    probe_deleted = deleted[:1000]

    def checked(db, fn):
        def run():
            client.drop_database(db)
            r = fn(db)
            coll = client[db][COLL]
            n = coll.count_documents({})
            gone = coll.count_documents({"_id": {"$in": probe_deleted}})
            rw = coll.count_documents({"status": "RW"})
            keys = [dict(ix["key"]) for ix in coll.list_indexes()]
            client.drop_database(db)
            if (n, gone, rw) != (total, 0, n_updated) or {"createdAt": 1} not in keys:
                raise RuntimeError(
                    f"{db}: {n:,} documents (expected {total:,}), {gone:,} deleted ones "
                    f"back, {rw:,} updated ones (expected {n_updated:,}), indexes {keys}")
            r["docs"] = n
            return r
        return run

    def dcb_restore(root, policy, extra):
        return lambda db: measure(
            [b.dcb, "--policies", b.policies, "--backup-root", root, "restore", "--policy",
             policy, *extra, "--to-database", db, "--quiet"], env=b.env, cwd=b.work)

    mongorestore = os.path.join(b.tools, "mongorestore")
    tools = {
        "chain": checked("restore_chain", dcb_restore(chain_root, "chain", ["--until", until])),
        "whole": checked("restore_whole", dcb_restore(whole_root, "whole", [])),
        "mongorestore": checked("restore_mongorestore", lambda db: measure(
            [mongorestore, "--uri", bench.with_direct(b.uri), "--gzip",
             f"--archive={dump_path}", f"--nsInclude={DB}.{COLL}", f"--nsFrom={DB}.{COLL}",
             f"--nsTo={db}.{COLL}", "--quiet"], cwd=b.work)),
    }
    res = interleaved(b.args.runs, tools)
    client.close()
    res["until"] = until
    res["chain_mb"] = sum(os.path.getsize(os.path.join(chain_root, "chain", m["archive"]))
                          for m in manifests(chain_root, "chain")) / 1e6
    res["whole_mb"] = sum(os.path.getsize(os.path.join(whole_root, "whole", m["archive"]))
                          for m in manifests(whole_root, "whole")) / 1e6
    res["dump_mb"] = os.path.getsize(dump_path) / 1e6
    return res


# ---------------------------------------------------------------------------------
# The parts, timed alone with pymongo


def server_cpu(server):
    """CPU seconds (user + system) the test server's process has used so far."""
    with open(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children") as f:
        kids = f.read().split()
    total = 0.0
    for pid in kids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def time_parts(server, token, window, updated_ids):
    """The chain run's extra reads, each alone, from this process: the change stream
    from the full's resume token (with dcb's filters, with and without updates), and
    the updated documents read by `_id` in batches of 1,000 (dcb's batch)."""
    import bson
    import bson.datetime_ms
    import pymongo

    client = pymongo.MongoClient(server.uri)
    coll = client[DB][COLL]
    lo = bson.datetime_ms.DatetimeMS(window[0])
    hi = bson.datetime_ms.DatetimeMS(window[1])
    outside = {"$not": {"$gte": lo, "$lt": hi}}
    resume = bson.decode(base64.b64decode(token))["t"]
    out = {}

    def stream(name, wanted):
        """Read until an empty batch leaves the resume token where it was (the server
        has nothing more: nothing writes while this runs), as dcb's read loop does."""
        pipeline = [{"$match": {"$or": wanted}}] if wanted else []
        t0, c0 = time.perf_counter(), server_cpu(server)
        n = empty = 0
        last = None
        with coll.watch(pipeline, resume_after=resume, batch_size=10_000,
                        max_await_time_ms=100) as s:
            while True:
                if s.try_next() is not None:
                    n += 1
                    continue
                empty += 1
                if s.resume_token == last:
                    break
                last = s.resume_token
        out[name] = {"wall": time.perf_counter() - t0, "n": n, "empty": empty,
                     "server_cpu": server_cpu(server) - c0}
        log(f"  {name}: {n:,} events, {empty:,} empty batches, {out[name]['wall']:.2f} s")

    deletes = {"operationType": "delete"}
    late = {"operationType": {"$in": ["insert", "replace"]}, "fullDocument.createdAt": outside}
    updates = {"operationType": "update", "updateDescription.updatedFields.createdAt": outside}
    stream("change stream to the end, dcb's filter, captureUpdates: true",
           [deletes, late, updates])
    stream("change stream to the end, dcb's filter, captureUpdates: false", [deletes, late])
    stream("change stream to the end, no filter (every event since the full)", None)
    t0, c0 = time.perf_counter(), server_cpu(server)
    n = 0
    for i in range(0, len(updated_ids), 1000):
        n += len(list(coll.find({"_id": {"$in": updated_ids[i:i + 1000]}}).batch_size(4096)))
    out["updated documents read by _id (batches of 1,000)"] = {
        "wall": time.perf_counter() - t0, "n": n, "empty": None,
        "server_cpu": server_cpu(server) - c0}
    log(f"  by _id: {n:,} documents in {time.perf_counter() - t0:.2f} s")
    t0, c0 = time.perf_counter(), server_cpu(server)
    n = 0
    for _ in coll.find_raw_batches({"createdAt": {"$gte": lo, "$lt": hi}}).batch_size(4096):
        n += 1
    out["the day's window read (index range, raw batches)"] = {
        "wall": time.perf_counter() - t0, "empty": None, "server_cpu": server_cpu(server) - c0,
        "n": coll.count_documents(
            {"createdAt": {"$gte": lo, "$lt": hi}})}
    client.close()
    return out


# ---------------------------------------------------------------------------------
# Report


def fmt_ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"


def report(args, full_case, day_case, parts, info, restore=None):
    lines = []
    p = lines.append
    p(f"{args.docs:,} documents ({info['old']:,} before the full, {info['day']:,} in the "
      f"last day), compression level {args.level}, median of {args.runs} runs (each "
      f"figure separately). Wall and CPU in seconds (CPU = user + system of the `dcb` "
      f"process), peak RSS in MB.")
    p("")
    p("Case 1: a full against the whole-collection export (fresh backup root each run).")
    p("")
    p("| run | docs | wall s | CPU s | peak RSS MB | archive MB | wall vs whole | "
      "CPU vs whole | wall vs mongodump |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = full_case["whole"]
    dump = full_case["mongodump"]
    for label, key in [("whole collection, no `full` (`initial: all`, `settle: 0s`)", "whole"),
                       ("**full** (`full: 7d`, first run)", "full"),
                       ("`mongodump --gzip --archive` of the collection", "mongodump")]:
        r = full_case[key]
        p(f"| {label} | {r['docs']:,} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['rss']:.0f} | "
          f"{r['archive_mb']:.1f} | {fmt_ratio(r['wall'], base['wall'])} | "
          f"{fmt_ratio(r['cpu'], base['cpu'])} | {fmt_ratio(r['wall'], dump['wall'])} |")
    p("")
    p(f"Case 2: one day `[end - 1d, end)`, after {info['deleted']:,} deletions and "
      f"{info['updated']:,} updates of older documents since the full.")
    p("")
    p("| run | window docs | captured | deleted | wall s | CPU s | peak RSS MB | "
      "archive MB | wall vs plain | wall vs mongodump |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    plain = day_case["plain"]
    dump = day_case["mongodump"]
    rows = [("plain, no `full`, untimed count done (the baseline)", "plain"),
            ("plain, no `full`, first run of the day (untimed count)", "plain_first"),
            ("**chain incremental**, `captureUpdates: true` (default)", "chain"),
            ("chain incremental, `captureUpdates: false`", "chain_nocap"),
            ("`mongodump --gzip --archive --query` of the day", "mongodump")]
    for label, key in rows:
        r = day_case[key]
        cap, dele = "", ""
        if key.startswith("chain"):
            want_cap = info["updated"] if key == "chain" else 0
            cap = f"{r['captured']:,} of {want_cap:,}"
            dele = f"{r['deleted']:,} of {info['deleted']:,}"
        p(f"| {label} | {r['window_docs']:,} | {cap} | {dele} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['rss']:.0f} | "
          f"{r['archive_mb']:.2f} | {fmt_ratio(r['wall'], plain['wall'])} | "
          f"{fmt_ratio(r['wall'], dump['wall'])} |")
    p("")
    pairs = day_case["pairs"]
    for key, label in [("chain", "captureUpdates: true"), ("chain_nocap", "captureUpdates: false")]:
        rs = [f"{c / b:.2f}x" for c, b in zip(pairs[key], pairs["plain"])]
        p(f"Paired runs, chain ({label}) / plain: {', '.join(rs)}.")
    p("")
    p("| target | measured | |")
    p("|---|---|---|")
    for key, label in [("chain", "one-day incremental of a chain <= 1.10x today's one-day "
                                 "run (median wall)"),
                       ("chain_nocap", "same, `captureUpdates: false`")]:
        ratio = day_case[key]["wall"] / plain["wall"]
        v = bench.verdict(ratio <= 1.10)
        if key in info["missed"]:
            v += ", but **not comparable: the runs missed changes**"
        p(f"| {label} | {day_case[key]['wall']:.2f} s vs {plain['wall']:.2f} s: "
          f"{ratio:.2f}x | {v} |")
    if restore:
        p("")
        p(f"Case 3: the collection restored into an empty database ({restore['chain']['docs']:,} "
          f"documents; each restore checked: every document, none deleted, the updated ones "
          f"updated, the index).")
        p("")
        p("| restore | from | wall s | CPU s | peak RSS MB | wall vs plain |")
        p("|---|---|---:|---:|---:|---:|")
        pw = restore["whole"]["wall"]
        for label, key, src in [
                ("plain `dcb restore` (the whole-collection export)", "whole",
                 f"1 archive, {restore['whole_mb']:.1f} MB"),
                ("**`dcb restore --until`** (the chain: full, then the incremental's "
                 "deletions and documents)", "chain",
                 f"2 archives, {restore['chain_mb']:.1f} MB"),
                ("`mongorestore --gzip --archive`", "mongorestore",
                 f"mongodump's archive, {restore['dump_mb']:.1f} MB")]:
            r = restore[key]
            p(f"| {label} | {src} | {r['wall']:.2f} | {r['cpu']:.2f} | {r['rss']:.0f} | "
              f"{fmt_ratio(r['wall'], pw)} |")
    p("")
    p("The chain's extra reads, each alone (pymongo, from the full's resume token to the "
      "end of the history):")
    p("")
    p("| part | events / docs | empty batches | wall s | server CPU s |")
    p("|---|---:|---:|---:|---:|")
    for name, r in parts.items():
        e = "" if r["empty"] is None else f"{r['empty']:,}"
        p(f"| {name} | {r['n']:,} | {e} | {r['wall']:.2f} | {r['server_cpu']:.2f} |")
    full_read = next((r for k, r in parts.items() if "captureUpdates: true" in k), None)
    nocap_read = next((r for k, r in parts.items() if "captureUpdates: false" in k), None)
    by_id = next((r for k, r in parts.items() if "by _id" in k), None)
    window = next((r for k, r in parts.items() if "window read" in k), None)
    if full_read and nocap_read and by_id and window:
        # What no client can avoid on this server: today's run plus the reads the chain
        # adds, each timed alone above.
        floors = {"chain": plain["wall"] + full_read["wall"] + by_id["wall"],
                  "chain_nocap": plain["wall"] + nocap_read["wall"]}
        p("")
        p(f"On this server the day's history costs more to read than the day's documents: "
          f"the change stream alone ({nocap_read['wall']:.2f} s with `captureUpdates: "
          f"false`'s filter) against the window's index range alone "
          f"({window['wall']:.2f} s), {nocap_read['wall'] / window['wall']:.2f}x. The "
          f"least a chain run can take here is today's run plus those reads:")
        p("")
        p("| run | floor: plain + its reads alone | measured | measured vs floor | "
          "floor vs plain |")
        p("|---|---:|---:|---:|---:|")
        for key, label, parts_ in [
                ("chain", "chain, `captureUpdates: true`",
                 f"{plain['wall']:.2f} + {full_read['wall']:.2f} + {by_id['wall']:.2f}"),
                ("chain_nocap", "chain, `captureUpdates: false`",
                 f"{plain['wall']:.2f} + {nocap_read['wall']:.2f}")]:
            f = floors[key]
            m = day_case[key]["wall"]
            p(f"| {label} | {parts_} = {f:.2f} s | {m:.2f} s | {m / f:.2f}x | "
              f"{f / plain['wall']:.2f}x |")
    p("")
    p(f"The template full (once, before the last day): {info['full_docs']:,} documents in "
      f"{info['full_wall']:.2f} s. Oplog: `--oplog-max-entries {info['oplog']:,}`.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000, help="documents to load (default 1M)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each variant; the median is reported")
    ap.add_argument("--level", type=int, default=6, help="compression level")
    ap.add_argument("--no-build", action="store_true", help="use target/release/dcb as built")
    ap.add_argument("--no-restore", action="store_true", help="skip the restore case")
    ap.add_argument("--allow-missed-changes", action="store_true",
                    help="report the timings when a chain run records fewer deletions or "
                         "captures fewer updates than the load made (else: stop)")
    args = ap.parse_args()

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    if not args.no_build:
        log("building target/release/dcb")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "dcb"],
                       cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    dcb = os.path.join(target, "release", "dcb")

    day_n = args.docs // 10
    old_n = args.docs - day_n
    n_deleted = day_n // 100
    n_updated = old_n * 5 // 1000
    # Every write of the load is an oplog entry: the inserts, the churn, the index
    # build and a margin. The history from the full on must survive to the last run.
    oplog = args.docs + n_deleted + n_updated + 100_000

    work = tempfile.mkdtemp(prefix="dcb-bench-chain-")
    server = None
    try:
        server = Server(os.path.join(work, "db"),
                        ["--oplog-max-entries", str(oplog),
                         "--oplog-retention-seconds", str(OPLOG_RETENTION_S)])
        log(f"test server at {server.uri} (oplog {oplog:,} entries)")
        import pymongo

        client = pymongo.MongoClient(server.uri)
        coll = client[DB][COLL]
        coll.drop()
        end = int(time.time() * 1000)
        day = (end - DAY_MS, end)
        rnd = random.Random(7)
        log(f"loading {old_n:,} documents before the last day")
        old_ids = insert(coll, rnd, old_n, end - 10 * DAY_MS, day[0] - MARGIN_MS)
        coll.create_index("createdAt")

        tools = bench.mongo_tools(work)
        b = ChainBench(args, work, server.uri, dcb, tools)
        full_extra = "full: 7d\n"
        b.extra["chain"] = full_extra + "captureUpdates: true\n"
        template = os.path.join(work, "template")
        log("the chain's full, into the template root")
        r = b.run_in(template, "chain", "  initial: all\n  settle: 0s\n")
        tman = newest_manifest(template, "chain")
        if tman.get("kind") != "full" or tman["documents"] != old_n:
            raise RuntimeError(f"the template is not a full of {old_n:,} documents: {tman}")
        token = tman["changes"]["token"]
        with open(os.path.join(template, "logs", "state.json")) as f:
            st = json.load(f)["collections"][f"chain/{DB}/{COLL}"]
        # The daily count of untimed documents, as already done today (none exist): so
        # the chain runs are like the baseline's, the other runs of a day.
        state_path = os.path.join(template, "logs", "state.json")
        with open(state_path) as f:
            state = json.load(f)
        state["collections"][f"chain/{DB}/{COLL}"].update(
            untimed=0, untimedCheckedAt=dt.datetime.now(dt.timezone.utc).isoformat()
            .replace("+00:00", "Z"))
        with open(state_path, "w") as f:
            json.dump(state, f)
        watermark = st["watermark"]
        wm_ms = iso_ms(watermark)  # floor: `from` lands at day[0] + less than 1 ms
        overlap_ms = wm_ms - day[0]
        info = {"old": old_n, "day": day_n, "deleted": n_deleted, "updated": n_updated,
                "full_docs": tman["documents"], "full_wall": r["wall"], "oplog": oplog}
        log(f"  full: {tman['documents']:,} documents in {r['wall']:.2f} s; watermark "
            f"{watermark}")

        # The last day, after the full: inserts, and among them the churn.
        victims = rnd.sample(range(old_n), n_deleted + n_updated)
        deleted = [old_ids[i] for i in victims[:n_deleted]]
        updated = [old_ids[i] for i in victims[n_deleted:]]
        del old_ids
        done = {"d": 0, "u": 0}

        def churn(inserted):
            share = inserted / day_n
            d_to, u_to = round(n_deleted * share), round(n_updated * share)
            if d_to > done["d"]:
                coll.delete_many({"_id": {"$in": deleted[done["d"]:d_to]}})
                done["d"] = d_to
            if u_to > done["u"]:
                coll.update_many({"_id": {"$in": updated[done["u"]:u_to]}},
                                 {"$set": {"status": "RW"}, "$inc": {"qty": 1}})
                done["u"] = u_to

        log(f"the last day: {day_n:,} inserts, {n_deleted:,} deletes, {n_updated:,} updates")
        day_ids = insert(coll, rnd, day_n, day[0] + MARGIN_MS, day[1] - MARGIN_MS, churn)
        if done != {"d": n_deleted, "u": n_updated}:
            raise RuntimeError(f"churn incomplete: {done}")
        total = coll.count_documents({})
        if total != args.docs - n_deleted:
            raise RuntimeError(f"{total:,} documents, expected {args.docs - n_deleted:,}")
        client.close()

        # -------------------------------------------------------------------------
        # Case 2 first checked, one run each: what each variant exports.
        def plain_window():
            now = int(time.time() * 1000)
            return f"  initial: {now - day[0]}ms\n  settle: {now - day[1]}ms\n"

        def chain_window():
            now = int(time.time() * 1000)
            return (f"  initial: all\n  settle: {now - day[1]}ms\n"
                    f"  overlap: {overlap_ms}ms\n")

        pairs = {"plain": [], "plain_first": [], "chain": [], "chain_nocap": []}
        missed = {}  # captureUpdates -> (captured, deleted) when short of the load's

        def plain(first=False, keep=None):
            r = b.run_dcb("plain", [COLL], plain_window, untimed_done=not first)
            man = newest_manifest(r["root"], "plain")
            r.update(window_docs=man["documents"], docs=man["documents"],
                     archive_mb=os.path.getsize(
                         os.path.join(r["root"], "plain", man["archive"])) / 1e6)
            if keep is not None:
                keep["plain"] = (r["root"], man)
            pairs["plain_first" if first else "plain"].append(r["wall"])
            return r

        def chain(capture, keep=None):
            root = b.fresh_root()
            clone(template, root)
            b.extra["chain"] = full_extra + f"captureUpdates: {str(capture).lower()}\n"
            r = b.run_in(root, "chain", chain_window())
            man = newest_manifest(root, "chain")
            check_incremental(man)
            ch = man["changes"]
            r.update(window_docs=man["documents"] - ch["captured"], docs=man["documents"],
                     captured=ch["captured"], deleted=ch["deleted"],
                     archive_mb=os.path.getsize(os.path.join(root, "chain", man["archive"])) / 1e6)
            want = (n_updated if capture else 0, n_deleted)
            if r["window_docs"] != day_n:
                raise RuntimeError(f"chain run (captureUpdates: {capture}): {r['window_docs']:,} "
                                   f"window documents, expected {day_n:,}")
            if (r["captured"], r["deleted"]) != want:
                missed[capture] = (r["captured"], r["deleted"])
                if not args.allow_missed_changes:
                    raise RuntimeError(
                        f"chain run (captureUpdates: {capture}): {r['captured']:,} updated "
                        f"documents captured and {r['deleted']:,} deletions recorded; the load "
                        f"made {want[0]:,} and {want[1]:,} since the full. The run missed "
                        f"changes (--allow-missed-changes reports the timings anyway)")
            if keep is not None:
                keep["chain" if capture else "chain_nocap"] = (root, man)
            pairs["chain" if capture else "chain_nocap"].append(r["wall"])
            return r

        log("checking one run of each variant against the load")
        kept = {}
        for name, fn in (("plain", plain), ("chain", lambda keep: chain(True, keep)),
                         ("chain_nocap", lambda keep: chain(False, keep))):
            fn(keep=kept)
            # Out of fresh_root()'s way (it removes the previous run's root).
            root, man = kept[name]
            os.replace(root, root + "-checked")
            kept[name] = (root + "-checked", man)
        want_day = {str(i) for i in day_ids}
        want_upd = {str(i) for i in updated}
        want_del = {str(i) for i in deleted}
        for name, (root, man) in kept.items():
            policy = "plain" if name == "plain" else "chain"
            mem = members(root, policy, man)
            got = {str(i) for i in ids_of(mem[f"{DB}/{COLL}.bson"])}
            dels = [v for k, v in mem.items() if os.path.basename(k).startswith("dcb-deletions.")]
            got_del = {str(i) for i in ids_of(dels[0])} if dels else set()
            if got - want_upd != want_day:
                raise RuntimeError(f"{name}: the window's documents differ from the day's "
                                   f"inserts ({len(got - want_upd - want_day):,} extra, "
                                   f"{len(want_day - got):,} missing)")
            if got - want_day - (want_upd if name == "chain" else set()):
                raise RuntimeError(f"{name}: documents other than the updated ones captured")
            if got_del - (want_del if policy == "chain" else set()):
                raise RuntimeError(f"{name}: the deletions member holds _ids never deleted")
            if name != "plain" and (len(got & want_upd), len(got_del)) != (
                    len(want_upd) if name == "chain" else 0, len(want_del)):
                log(f"  {name}: MISSED CHANGES: {len(got & want_upd):,} of {len(want_upd):,} "
                    f"updated documents captured, {len(got_del):,} of {len(want_del):,} "
                    f"deletions recorded")
            shutil.rmtree(root)
            log(f"  {name}: {len(got):,} documents, {len(got_del):,} deletions: as loaded")
        for v in pairs.values():
            v.clear()

        # -------------------------------------------------------------------------
        log("case 1: a full against the whole-collection export")

        def whole(policy):
            r = b.run_dcb(policy, [COLL], lambda: "  initial: all\n  settle: 0s\n")
            man = newest_manifest(r["root"], policy)
            r.update(docs=man["documents"], kind=man.get("kind"),
                     archive_mb=os.path.getsize(
                         os.path.join(r["root"], policy, man["archive"])) / 1e6)
            if policy == "full7" and man.get("kind") != "full":
                raise RuntimeError(f"the full run was not a full: {man.get('kind')!r}")
            return r

        b.extra["full7"] = full_extra
        dump_path = os.path.join(work, "whole.archive")

        def dump_whole():
            r = b.run_mongodump(COLL, None, keep_as=dump_path)
            r["docs"] = total
            return r

        res1 = interleaved(args.runs, {"whole": lambda: whole("whole"),
                                       "full": lambda: whole("full7"),
                                       "mongodump": dump_whole})

        log("case 2: one day, chain incremental against the plain export")
        def dump_day():
            r = b.run_mongodump(COLL, day)
            r.update(window_docs=day_n)
            return r

        res2 = interleaved(args.runs, {
            "plain": plain,
            "chain": lambda: chain(True),
            "plain_first": lambda: plain(first=True),
            "chain_nocap": lambda: chain(False),
            "mongodump": dump_day,
        })
        res2["pairs"] = pairs
        info["missed"] = {"chain" if k else "chain_nocap": v for k, v in missed.items()}

        # Before the restores: their inserts roll the oplog past the full's token.
        log("the chain's extra reads, each alone")
        parts = time_parts(server, token, day, updated)

        res3 = None
        if not args.no_restore:
            res3 = run_restores(b, template, chain_window, dump_path, total, deleted, n_updated)
        print(report(args, res1, res2, parts, info, res3))
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
