"""dcb's export and restore benchmark: `dcb run` against the bare read of the same
query (the read limit), the real `mongodump --gzip --archive`, and `gzip` on the same
bytes; `dcb restore` against a bare `insert_many` of the same documents (the write
limit) and the real `mongorestore --gzip --archive`; all measured side by side in one
run.

    .venv/bin/python scripts/bench.py [--docs 1000000] [--runs 3] [--level 6]
                                      [--concurrency 2] [--no-restore] [--no-build]

It starts its own SecantusDB test server (on-disk storage in a temporary folder),
loads --docs MES-like documents of about 430 B (`createdAt` spread uniformly over the
10 days ending at load time, indexed), builds the release binaries (`dcb` and the
`bare_read` and `bare_insert` examples), then for each export case

- whole collection: dcb `initial: all` (natural-order scan, no server filter) against
  a bare read with no filter, and plain `mongodump`;
- one day: the last full day of data, `[end - 1d, end)`, as an index range
  `{createdAt: {$gte, $lt}}` for every tool (dcb's window is written so its bounds
  match to the millisecond; the document counts are printed to show it);

runs each tool --runs times, interleaved, and reports the median of each figure: wall
seconds, CPU seconds (user + system) and peak RSS of the process, from wait4(2). Peak
RSS is also reported as the maximum over the runs: a cost that one run in a few pays
never shows in a median (a driver panic caught at exit once cost a dcb run 150 MB, see
CHANGELOG). Whatever a measured command writes on stderr is logged, so such a run
says why. For
the CPU comparison, dcb's `.bson` member is extracted once and `gzip -<level> -c` is
timed on it. With --concurrency N > 1 it also loads N collections of --docs/N
documents and compares one `dcb run` exporting all N with `concurrency: N` against
the sum of N single-collection runs.

Restore (last, unless --no-restore): the last whole-collection export is kept (dcb's
backup root, its `.bson` member extracted, and mongodump's archive) and restored into
an empty database --runs times, interleaved: `bare_insert` streaming the extracted
`.bson` through `insert_many(..).ordered(false)` in dcb's batches (10,000 documents or
16 MiB) and then creating the `createdAt` index; `dcb restore --to-database` from its
`.tar.gz` (which verifies the archive, inserts, then creates the index from the
metadata); `mongorestore --gzip --archive` of mongodump's archive with
--nsFrom/--nsTo; and `dcb verify` alone, to show what the verification before a
restore costs. Each target database is dropped before and after every run, and
checked in between: it must hold every document and the `createdAt` index, or the
benchmark stops with an error.

The server and every temporary file are removed at the end, also on error or Ctrl-C.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAY_MS = 86_400_000
DB = "bench"
COLL = "api_logs"


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# Measuring one process


# A process's peak RSS as the kernel reports it (ru_maxrss) starts at the high-water
# mark of the memory it was forked from: a child forked straight from this Python
# process (hundreds of MB after loading the data) would report at least that much. So
# each command is started by a small helper process, which forks it, reaps it with
# wait4(2) and reports its figures. The helper's own size (~7 MB) is the floor.
MEASURE_HELPER = r"""
import json, os, sys, time
argv, result = json.loads(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t0
with open(result, "w") as f:
    json.dump({"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
               "maxrss_kb": ru.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, f)
"""


def measure(cmd, env=None, cwd=None, stdin_path=None):
    """Run cmd to completion; return its wall s, CPU s (user+sys), peak RSS MB, stdout.

    The figures are the kernel's accounting of that one process (wait4), so neither
    this script nor the helper that starts it counts.
    """
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(tempfile.TemporaryFile())
        err = stack.enter_context(tempfile.TemporaryFile())
        stdin = stack.enter_context(open(stdin_path, "rb")) if stdin_path else subprocess.DEVNULL
        fd, result = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        stack.callback(os.remove, result)
        helper = subprocess.run([sys.executable, "-I", "-S", "-c", MEASURE_HELPER,
                                 json.dumps(cmd), result],
                                stdin=stdin, stdout=out, stderr=err, env=env, cwd=cwd)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        with open(result) as f:
            text = f.read()
        fig = json.loads(text) if text else {"code": helper.returncode}
        if helper.returncode != 0 or fig["code"] != 0:
            raise RuntimeError(f"command failed ({fig['code']}): {' '.join(cmd)}\n"
                               f"{stderr[-3000:]}")
        if stderr.strip():
            # Every tool runs quiet: whatever it says on stderr (a warning, a panic
            # caught inside a process that still succeeds) is worth seeing.
            lines = stderr.strip().splitlines()
            more = f"\n  ... {len(lines) - 8} more lines" if len(lines) > 8 else ""
            log(f"  {os.path.basename(cmd[0])} wrote on stderr:\n  "
                + "\n  ".join(lines[:8]) + more)
    return {"wall": fig["wall"], "cpu": fig["user"] + fig["sys"],
            "rss": fig["maxrss_kb"] / 1024.0, "out": stdout}


def median(results):
    """The median of each figure separately, and the largest peak RSS of the runs
    (`rss_max`); everything else (output, counts, sizes) from the last run."""
    keys = ("wall", "cpu", "rss", "insert_s", "index_s")
    return {**results[-1], "n": len(results), "rss_max": max(r["rss"] for r in results),
            **{k: statistics.median(r[k] for r in results) for k in keys
               if all(k in r for r in results)}}


def interleaved(runs, tools):
    """Run each tool once per round, in turn, so drift in the machine's speed hits all
    tools alike. `tools`: {name: fn returning a measure() result}."""
    results = {name: [] for name in tools}
    for i in range(runs):
        for name, fn in tools.items():
            r = fn()
            results[name].append(r)
            log(f"  run {i + 1}/{runs} {name}: {r['wall']:.2f} s wall, {r['cpu']:.2f} s CPU, "
                f"{r['rss']:.0f} MB")
    return {name: median(rs) for name, rs in results.items()}


# ---------------------------------------------------------------------------------
# Server, tools, data


class Server:
    def __init__(self, storage):
        # testserver.py stops its server when our end of its stdin closes, so the
        # server goes away even if this script is killed outright.
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "scripts", "testserver.py"),
             "--storage-path", storage],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the test server did not start: {line!r}")
        self.uri = line.split()[1]

    def stop(self):
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of its process group (the server itself).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(5)


def mongo_tools(work):
    """A folder holding mongodump: $DCB_MONGO_TOOLS, PATH, or the peers tarball."""
    d = os.environ.get("DCB_MONGO_TOOLS")
    if d and os.path.exists(os.path.join(d, "mongodump")):
        return d
    found = shutil.which("mongodump")
    if found:
        return os.path.dirname(found)
    tarball = os.path.join(ROOT, "..", "shared", "peers", "mongo-tools-linux-x86_64.tar.gz")
    if not os.path.exists(tarball):
        raise RuntimeError("mongodump not found: set DCB_MONGO_TOOLS or put it on PATH")
    dest = os.path.join(work, "mongo-tools")
    os.makedirs(dest)
    with tarfile.open(tarball) as t:
        t.extractall(dest)
    for root, _, files in os.walk(dest):
        if "mongodump" in files:
            return root
    raise RuntimeError(f"no mongodump in {tarball}")


def with_direct(uri):
    if "directconnection=" in uri.lower():
        return uri
    return uri + ("&" if "?" in uri else "?") + "directConnection=true"


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "


def load(client, coll_name, n, end_ms, seed):
    """n MES-like documents (~430 B of BSON each), createdAt uniform over the 10 days
    before end_ms, inserted in natural (insertion) order, then the createdAt index."""
    from bson.datetime_ms import DatetimeMS

    coll = client[DB][coll_name]
    coll.drop()
    rnd = random.Random(seed)
    t0 = time.monotonic()
    batch = []
    for i in range(n):
        batch.append({
            "createdAt": DatetimeMS(end_ms - 1 - rnd.randrange(10 * DAY_MS)),
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
            # Random text, so compression works as hard as on real data, not on repeats.
            "payload": "".join(rnd.choices(ALPHABET, k=200)),
        })
        if len(batch) == 10_000:
            coll.insert_many(batch, ordered=False)
            batch = []
            if (i + 1) % 200_000 == 0:
                log(f"  {coll_name}: {i + 1:,} documents ({(i + 1) / (time.monotonic() - t0):,.0f}/s)")
    if batch:
        coll.insert_many(batch, ordered=False)
    coll.create_index("createdAt")
    log(f"loaded {n:,} documents into {DB}.{coll_name} in {time.monotonic() - t0:.0f} s")


def plan_stage(client, coll_name, flt):
    """The winning plan's stages for find(flt), for the report (e.g. IXSCAN)."""
    try:
        ex = client[DB].command("explain", {"find": coll_name, "filter": flt})
        plan = ex.get("queryPlanner", {}).get("winningPlan", {})
        stages = []
        while isinstance(plan, dict) and plan:
            stages.append(plan.get("stage", "?"))
            plan = plan.get("inputStage")
        return " <- ".join(stages) or "unknown"
    except Exception as e:  # noqa: BLE001 - informational only
        return f"unknown ({type(e).__name__})"


# ---------------------------------------------------------------------------------
# The tools under test


class Bench:
    def __init__(self, args, work, uri, dcb, bare, bare_insert, tools):
        self.args, self.work, self.uri = args, work, uri
        self.dcb, self.bare, self.bare_insert, self.tools = dcb, bare, bare_insert, tools
        self.policies = os.path.join(work, "policies")
        os.makedirs(self.policies)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DCB_")}
        self.env.update(DCB_MONGODB_URI=uri, DCB_LOG="warn")
        self.seq = 0

    def write_policy(self, name, collections, window, concurrency=None):
        text = (f"name: {name}\nschedule: \"0 * * * *\"\ndatabase: {DB}\ntimeField: createdAt\n"
                f"window:\n{window}collections: [{', '.join(collections)}]\nretention: 30d\n"
                f"compression:\n  level: {self.args.level}\n")
        if concurrency:
            text += f"concurrency: {concurrency}\n"
        with open(os.path.join(self.policies, f"{name}.yaml"), "w") as f:
            f.write(text)

    def fresh_root(self):
        """A new backup root: no state, so every run exports the same window."""
        self.seq += 1
        root = os.path.join(self.work, f"out{self.seq}")
        shutil.rmtree(os.path.join(self.work, f"out{self.seq - 1}"), ignore_errors=True)
        return root

    def run_dcb(self, policy, collections, window_fn, concurrency=None, untimed_done=False):
        """window_fn() returns the policy's `window:` block, computed just before the
        run so a relative window lands on fixed bounds.

        untimed_done: start from a state that says the daily count of documents with
        no usable time field was just done (as on every run but the first of a day),
        and nothing else: no watermark, so the window is the same."""
        self.write_policy(policy, collections, window_fn(), concurrency)
        root = self.fresh_root()
        if untimed_done:
            now = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
            os.makedirs(os.path.join(root, "logs"))
            with open(os.path.join(root, "logs", "state.json"), "w") as f:
                json.dump({"version": 1, "collections": {
                    f"{policy}/{DB}/{c}": {"policy": policy, "database": DB, "collection": c,
                                            "untimed": 0, "untimedCheckedAt": now}
                    for c in collections}}, f)
        r = measure([self.dcb, "--policies", self.policies, "--backup-root", root,
                     "run", "--policy", policy, "--quiet"], env=self.env, cwd=self.work)
        r["root"] = root
        return r

    def run_bare(self, coll, bounds):
        args = ["all"] if bounds is None else [str(bounds[0]), str(bounds[1])]
        r = measure([self.bare, self.uri, DB, coll, *args], cwd=self.work)
        docs, nbytes = map(int, r["out"].split())
        return {**r, "docs": docs, "bytes": nbytes}

    def run_mongodump(self, coll, bounds, keep_as=None):
        archive = os.path.join(self.work, "dump.archive")
        cmd = [os.path.join(self.tools, "mongodump"), "--uri", with_direct(self.uri), "-d", DB,
               "-c", coll, "--gzip", f"--archive={archive}", "--quiet"]
        if bounds is not None:
            cmd += ["--query", json.dumps({"createdAt": {
                "$gte": {"$date": {"$numberLong": str(bounds[0])}},
                "$lt": {"$date": {"$numberLong": str(bounds[1])}}}})]
        r = measure(cmd, cwd=self.work)
        r["archive_mb"] = os.path.getsize(archive) / 1e6
        if keep_as:
            os.replace(archive, keep_as)
        else:
            os.remove(archive)
        return r

    def dcb_output(self, root, policy):
        """(documents, bson bytes, archive MB, path of the .bson member extracted)."""
        pdir = os.path.join(root, policy)
        manifests = sorted(x for x in os.listdir(pdir) if x.endswith(".manifest.json"))
        docs = nbytes = 0
        size = 0.0
        for m in manifests:
            with open(os.path.join(pdir, m)) as f:
                man = json.load(f)
            docs += man["documents"]
            nbytes += man["bytes"]
            size += os.path.getsize(os.path.join(pdir, man["archive"])) / 1e6
        return docs, nbytes, size

    def extract_bson(self, root, policy, coll):
        pdir = os.path.join(root, policy)
        archive = next(os.path.join(pdir, x) for x in os.listdir(pdir) if x.endswith(".tar.gz"))
        dest = os.path.join(self.work, "bson")
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(archive) as t:
            t.extract(f"{DB}/{coll}.bson", dest)
        return os.path.join(dest, DB, f"{coll}.bson")

    def run_gzip(self, path):
        return measure(["gzip", f"-{self.args.level}", "-c"], stdin_path=path)


# ---------------------------------------------------------------------------------
# Cases


def run_case(b, name, bounds, window_fn, keep=None):
    """keep: a dict to receive, for the restore case, the last run's dcb backup root
    (`root`), its `.bson` member extracted (`bson`) and mongodump's archive (`dump`),
    kept on disk instead of removed."""
    log(f"case: {name}")
    last = {}

    def dcb(untimed_done=False):
        r = b.run_dcb("bench", [COLL], window_fn, untimed_done=untimed_done)
        last["root"] = r["root"]
        docs, nbytes, size = b.dcb_output(r["root"], "bench")
        return {**r, "docs": docs, "bytes": nbytes, "archive_mb": size}

    tools = {
        "bare read": lambda: b.run_bare(COLL, bounds),
        "dcb run": dcb,
        "mongodump": lambda: b.run_mongodump(
            COLL, bounds, keep_as=os.path.join(b.work, "restore.dump") if keep is not None
            else None),
    }
    if bounds is not None:
        # A bounded window is where dcb's daily count of untimed documents runs (a
        # scan counts them for free): time the runs without it too.
        tools["dcb run (untimed count done)"] = lambda: dcb(untimed_done=True)
    res = interleaved(b.args.runs, tools)
    # The counts and sizes of the last runs (identical from run to run).
    docs, nbytes = map(int, res["bare read"]["out"].split())
    ddocs, dbytes, dsize = b.dcb_output(last["root"], "bench")
    bson = b.extract_bson(last["root"], "bench", COLL)
    log(f"  gzip -{b.args.level} on dcb's {os.path.getsize(bson) / 1e6:.0f} MB .bson member")
    g = median([b.run_gzip(bson) for _ in range(b.args.runs)])
    if keep is None:
        os.remove(bson)
        shutil.rmtree(last["root"], ignore_errors=True)
    else:
        # Out of fresh_root()'s way, which removes the previous run's root.
        keep["root"] = os.path.join(b.work, "restore-root")
        keep["bson"] = os.path.join(b.work, "restore.bson")
        keep["dump"] = os.path.join(b.work, "restore.dump")
        keep["docs"] = ddocs
        keep["bytes"] = dbytes
        os.replace(last["root"], keep["root"])
        os.replace(bson, keep["bson"])
    return {"name": name, "docs": docs, "bytes": nbytes, "dcb_docs": ddocs, "dcb_bytes": dbytes,
            "dcb_mb": dsize, "bare": res["bare read"], "dcb": res["dcb run"],
            "dump": res["mongodump"], "gzip": g,
            "dcb_steady": res.get("dcb run (untimed count done)")}


def run_concurrency(b, n, end_ms):
    names = [f"part_{i + 1}" for i in range(n)]
    log(f"case: {n} collections, concurrency {n} vs the sum of single runs")

    def window():
        # The whole of each collection, as in the whole-collection case.
        return "  initial: all\n  settle: 0s\n"

    def bare_together():
        # What the server allows: the same N reads at once, without dcb.
        script = " & ".join(shlex.join([b.bare, b.uri, DB, c, "all"]) for c in names)
        return measure(["sh", "-c", f"{script} & wait"], cwd=b.work)

    tools = {f"dcb {c} alone": (lambda c=c: b.run_dcb(f"one_{c}", [c], window, 1))
             for c in names}
    tools[f"dcb {n} at once"] = lambda: b.run_dcb("all_parts", names, window, n)
    tools.update({f"bare read {c} alone": (lambda c=c: b.run_bare(c, None)) for c in names})
    tools[f"bare reads {n} at once"] = bare_together
    res = interleaved(b.args.runs, tools)
    singles = [res[f"dcb {c} alone"] for c in names]
    bare_singles = [res[f"bare read {c} alone"] for c in names]
    return {"n": n, "singles": singles, "together": res[f"dcb {n} at once"],
            "sum": sum(s["wall"] for s in singles), "bare_singles": bare_singles,
            "bare_sum": sum(s["wall"] for s in bare_singles),
            "bare_together": res[f"bare reads {n} at once"]}


RESTORE_DBS = {"bare insert": "restore_bare", "dcb restore": "restore_dcb",
               "mongorestore": "restore_mongorestore"}


def run_restore(b, kept):
    """The whole-collection export restored into an empty database: `dcb restore` from
    its `.tar.gz` against the bare insert_many of the same documents from the `.bson`
    member extracted, and `mongorestore --gzip --archive` of mongodump's archive of the
    same collection. Every target database is dropped before and after each run and
    checked in between: every document there, and the `createdAt` index."""
    import pymongo

    log(f"case: restore of the whole-collection export ({kept['docs']:,} documents)")
    client = pymongo.MongoClient(b.uri)
    mongorestore = os.path.join(b.tools, "mongorestore")

    def checked(tool, fn):
        def run():
            db = RESTORE_DBS.get(tool)
            if db:
                client.drop_database(db)
            r = fn(db)
            if db:
                coll = client[db][COLL]
                n = coll.count_documents({})
                keys = [dict(ix["key"]) for ix in coll.list_indexes()]
                client.drop_database(db)
                if n != kept["docs"] or {"createdAt": 1} not in keys:
                    raise RuntimeError(f"{tool}: {db}.{COLL} holds {n:,} documents (expected "
                                       f"{kept['docs']:,}) and the indexes {keys}")
                r["docs"] = n
            return r
        return run

    def bare(db):
        r = measure([b.bare_insert, b.uri, db, COLL, kept["bson"]], cwd=b.work)
        docs, nbytes, insert_s, index_s = r["out"].split()
        return {**r, "inserted": int(docs), "bytes": int(nbytes), "insert_s": float(insert_s),
                "index_s": float(index_s)}

    def dcb(db):
        return measure([b.dcb, "--policies", b.policies, "--backup-root", kept["root"],
                        "restore", "--policy", "bench", "--to-database", db, "--quiet"],
                       env=b.env, cwd=b.work)

    def verify(_db):
        return measure([b.dcb, "--policies", b.policies, "--backup-root", kept["root"],
                        "verify", "--policy", "bench", "--quiet"], env=b.env, cwd=b.work)

    def dump(db):
        return measure([mongorestore, "--uri", with_direct(b.uri), "--gzip",
                        f"--archive={kept['dump']}", f"--nsInclude={DB}.{COLL}",
                        f"--nsFrom={DB}.{COLL}", f"--nsTo={db}.{COLL}", "--quiet"], cwd=b.work)

    tools = {"bare insert": checked("bare insert", bare),
             "dcb restore": checked("dcb restore", dcb),
             "dcb verify": checked("dcb verify", verify)}
    if os.path.exists(mongorestore) and os.path.exists(kept["dump"]):
        tools["mongorestore"] = checked("mongorestore", dump)
    else:
        log("  no mongorestore beside mongodump: that row is left out")
    res = interleaved(b.args.runs, tools)
    client.close()
    return {"docs": kept["docs"], "bytes": kept["bytes"],
            "archive_mb": os.path.getsize(next(
                os.path.join(kept["root"], "bench", x)
                for x in os.listdir(os.path.join(kept["root"], "bench"))
                if x.endswith(".tar.gz"))) / 1e6,
            "dump_mb": os.path.getsize(kept["dump"]) / 1e6 if os.path.exists(kept["dump"])
            else None,
            **{k.replace(" ", "_"): v for k, v in res.items()}}


# ---------------------------------------------------------------------------------
# Report


def verdict(ok):
    return "**met**" if ok else "**missed**"


def report(args, cases, conc, stages, restore=None):
    lines = []
    p = lines.append
    p(f"{args.docs:,} documents, compression level {args.level}, median of {args.runs} runs "
      f"(each figure separately). Wall and CPU in seconds (CPU = user + system of that "
      f"process), peak RSS in MB (the median, and the largest of the {args.runs} runs), "
      f"MB/s = MB of BSON read per wall second.")
    p("")
    p("| case | tool | docs | wall s | docs/s | MB/s | CPU s | peak RSS MB | max peak RSS MB | "
      "output MB | wall vs bare | wall vs mongodump |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        mb = c["bytes"] / 1e6
        tools = [("bare read (Rust driver, raw BSON)", c["bare"], c["docs"], "-"),
                 ("dcb run", c["dcb"], c["dcb_docs"], f"{c['dcb_mb']:.1f}")]
        if c["dcb_steady"]:
            s = c["dcb_steady"]
            tools.append(("dcb run, untimed count already done today", s, s["docs"],
                          f"{s['archive_mb']:.1f}"))
        tools.append(("mongodump --gzip --archive", c["dump"], c["docs"],
                      f"{c['dump']['archive_mb']:.1f}"))
        for tool, r, docs, out in tools:
            p(f"| {c['name']} | {tool} | {docs:,} | {r['wall']:.2f} | {docs / r['wall']:,.0f} | "
              f"{mb / r['wall']:.1f} | {r['cpu']:.2f} | {r['rss']:.0f} | {r['rss_max']:.0f} | "
              f"{out} | "
              f"{r['wall'] / c['bare']['wall']:.2f}x | {r['wall'] / c['dump']['wall']:.2f}x |")
        g = c["gzip"]
        p(f"| {c['name']} | gzip -{args.level} on the same {mb:.0f} MB | | {g['wall']:.2f} | | "
          f"{mb / g['wall']:.1f} | {g['cpu']:.2f} | {g['rss']:.0f} | {g['rss_max']:.0f} | | | |")
    p("")
    if stages:
        p("Server plans: " + "; ".join(f"{k}: `{v}`" for k, v in stages.items()) + ".")
        p("")

    whole, day = cases[0], cases[1]
    rows = []
    w_ratio = whole["dcb"]["wall"] / whole["bare"]["wall"]
    d_ratio = day["dcb"]["wall"] / day["bare"]["wall"]
    rows.append(("1. wall <= 1.15x the bare read (whole collection)", f"{w_ratio:.2f}x",
                 verdict(w_ratio <= 1.15)))
    rows.append(("1. wall <= 1.15x the bare read (one day)", f"{d_ratio:.2f}x",
                 verdict(d_ratio <= 1.15)))
    if day["dcb_steady"]:
        sd = day["dcb_steady"]["wall"] / day["bare"]["wall"]
        rows.append(("1. wall <= 1.15x the bare read (one day, untimed count already done)",
                     f"{sd:.2f}x", verdict(sd <= 1.15)))
    for c in cases:
        extra = c["dcb"]["cpu"] - c["bare"]["cpu"]
        ratio = extra / c["gzip"]["cpu"] if c["gzip"]["cpu"] > 0 else float("nan")
        rows.append((f"2. CPU beyond the bare read <= 1.2x gzip -{args.level} ({c['name']})",
                     f"{c['dcb']['cpu']:.2f} - {c['bare']['cpu']:.2f} = {extra:.2f} s vs "
                     f"{c['gzip']['cpu']:.2f} s: {ratio:.2f}x", verdict(ratio <= 1.2)))
    # Every run, not the medians: one run in a few paying a fixed cost is the point.
    dcb_runs = ([(f"dcb run, {c['name']}", c["dcb"]) for c in cases]
                + [(f"dcb run, {c['name']}, untimed count done", c["dcb_steady"])
                   for c in cases if c["dcb_steady"]]
                + ([(f"dcb run, {conc['n']} collections at once", conc["together"])]
                   + [(f"dcb run, part_{i + 1} alone", x) for i, x in enumerate(conc["singles"])]
                   if conc else [])
                + ([("dcb restore", restore["dcb_restore"]), ("dcb verify", restore["dcb_verify"])]
                   if restore else []))
    worst, peak = max(((name, r["rss_max"]) for name, r in dcb_runs), key=lambda x: x[1])
    medians = max(r["rss"] for _, r in dcb_runs)
    rows.append(("3. peak RSS < 100 MB (every dcb run, the largest of all runs)",
                 f"{peak:.0f} MB ({worst}); the largest median {medians:.0f} MB",
                 verdict(peak < 100)))
    frac_docs = day["docs"] / whole["docs"] if whole["docs"] else float("nan")
    indexed = "IXSCAN" in stages.get("one day", "")
    for label, r in [("", day["dcb"]), (", untimed count already done", day["dcb_steady"])]:
        if r is None:
            continue
        ratio = r["wall"] / day["bare"]["wall"]
        share = r["wall"] / whole["dcb"]["wall"]
        rows.append((f"4. one day costs in proportion to the window: an index range, and "
                     f"<= 1.15x the bare read of that range{label}",
                     f"plan {'IXSCAN' if indexed else 'not an index range'}; {ratio:.2f}x bare; "
                     f"{frac_docs:.1%} of the docs cost {share:.1%} of the whole-collection "
                     f"run (bare read: {day['bare']['wall'] / whole['bare']['wall']:.1%})",
                     verdict(indexed and ratio <= 1.15)))
    if conc:
        speed = conc["sum"] / conc["together"]["wall"]
        bare_speed = conc["bare_sum"] / conc["bare_together"]["wall"]
        rows.append((f"5. {conc['n']} collections at concurrency {conc['n']} clearly faster than "
                     f"the sum of single runs (>= 1.2x), when the server allows",
                     f"{conc['together']['wall']:.2f} s vs {conc['sum']:.2f} s: {speed:.2f}x "
                     f"(the server: {conc['n']} bare reads at once {bare_speed:.2f}x)",
                     verdict(speed >= 1.2) + ("" if bare_speed >= 1.2 else
                                              ": the server does not allow it")))
    if restore:
        bw, dw = restore["bare_insert"]["wall"], restore["dcb_restore"]["wall"]
        rows.append(("6. restore speed >= 0.85x the bare insert_many (whole collection into an "
                     "empty database, index included)",
                     f"{dw:.2f} s vs {bw:.2f} s: {bw / dw:.2f}x", verdict(bw / dw >= 0.85)))
    rows.append(("(baseline) whole collection <= 1.0x mongodump",
                 f"{whole['dcb']['wall'] / whole['dump']['wall']:.2f}x",
                 verdict(whole["dcb"]["wall"] <= whole["dump"]["wall"])))
    rows.append(("(baseline) one day <= 0.5x mongodump",
                 f"{day['dcb']['wall'] / day['dump']['wall']:.2f}x",
                 verdict(day["dcb"]["wall"] <= 0.5 * day["dump"]["wall"])))
    p("| target | measured | |")
    p("|---|---|---|")
    for r in rows:
        p(f"| {r[0]} | {r[1]} | {r[2]} |")
    if conc:
        p("")
        p(f"Concurrency case: {conc['n']} collections of {args.docs // conc['n']:,} documents.")
        p("")
        p("| run | wall s | CPU s | peak RSS MB | max peak RSS MB |")
        p("|---|---:|---:|---:|---:|")
        for i, s in enumerate(conc["singles"]):
            p(f"| dcb, part_{i + 1} alone | {s['wall']:.2f} | {s['cpu']:.2f} | {s['rss']:.0f} | "
              f"{s['rss_max']:.0f} |")
        p(f"| sum of the single runs | {conc['sum']:.2f} | "
          f"{sum(s['cpu'] for s in conc['singles']):.2f} | | |")
        t = conc["together"]
        p(f"| dcb, all {conc['n']}, concurrency {conc['n']} | {t['wall']:.2f} | {t['cpu']:.2f} | "
          f"{t['rss']:.0f} | {t['rss_max']:.0f} |")
        for i, s in enumerate(conc["bare_singles"]):
            p(f"| bare read, part_{i + 1} alone | {s['wall']:.2f} | {s['cpu']:.2f} | "
              f"{s['rss']:.0f} | {s['rss_max']:.0f} |")
        p(f"| sum of the single bare reads | {conc['bare_sum']:.2f} | "
          f"{sum(s['cpu'] for s in conc['bare_singles']):.2f} | | |")
        t = conc["bare_together"]
        p(f"| {conc['n']} bare reads at once (separate processes) | {t['wall']:.2f} | "
          f"{t['cpu']:.2f} | {t['rss']:.0f} (largest) | {t['rss_max']:.0f} (largest) |")
    if restore:
        r = restore
        mb = r["bytes"] / 1e6
        bare = r["bare_insert"]
        p("")
        p(f"Restore case: the whole-collection export ({r['docs']:,} documents, {mb:.0f} MB of "
          f"BSON, a {r['archive_mb']:.1f} MB archive) into an empty database, the `createdAt` "
          f"index included; speed vs bare = the bare insert's wall / the tool's wall.")
        p("")
        p("| tool | docs | wall s | docs/s | MB/s | CPU s | peak RSS MB | max peak RSS MB | "
          "speed vs bare |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        rows = [("bare insert_many (Rust driver, raw BSON, from the extracted .bson)", bare),
                ("dcb restore (from its .tar.gz: verify, insert, index)", r["dcb_restore"])]
        if "mongorestore" in r:
            rows.append((f"mongorestore --gzip --archive (mongodump's {r['dump_mb']:.1f} MB "
                         f"archive)", r["mongorestore"]))
        for tool, x in rows:
            p(f"| {tool} | {x['docs']:,} | {x['wall']:.2f} | {r['docs'] / x['wall']:,.0f} | "
              f"{mb / x['wall']:.1f} | {x['cpu']:.2f} | {x['rss']:.0f} | {x['rss_max']:.0f} | "
              f"{bare['wall'] / x['wall']:.2f}x |")
        v = r["dcb_verify"]
        p(f"| dcb verify alone (the check restore runs first) | | {v['wall']:.2f} | | "
          f"{mb / v['wall']:.1f} | {v['cpu']:.2f} | {v['rss']:.0f} | {v['rss_max']:.0f} | |")
        p("")
        p(f"The bare insert's own split: {bare['insert_s']:.2f} s in `insert_many`, "
          f"{bare['index_s']:.2f} s building the index.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000, help="documents to load (default 1M)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each tool; the median is reported")
    ap.add_argument("--level", type=int, default=6, help="compression level for dcb and gzip")
    ap.add_argument("--concurrency", type=int, default=2,
                    help="N collections exported at once vs one by one (0 or 1: skip)")
    ap.add_argument("--no-restore", action="store_true", help="skip the restore case")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already built")
    args = ap.parse_args()

    # Turn SIGTERM into an exception, so the finally below cleans up.
    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    if not args.no_build:
        log("building release binaries")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "dcb",
                        "--example", "bare_read", "--example", "bare_insert"],
                       cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    dcb = os.path.join(target, "release", "dcb")
    bare = os.path.join(target, "release", "examples", "bare_read")
    bare_insert = os.path.join(target, "release", "examples", "bare_insert")

    work = tempfile.mkdtemp(prefix="dcb-bench-")
    server = None
    try:
        tools = mongo_tools(work)
        server = Server(os.path.join(work, "db"))
        log(f"test server at {server.uri}")
        import pymongo
        client = pymongo.MongoClient(server.uri)
        end_ms = int(time.time() * 1000)
        load(client, COLL, args.docs, end_ms, seed=7)
        conc_n = args.concurrency if args.concurrency > 1 else 0
        for i in range(conc_n):
            load(client, f"part_{i + 1}", args.docs // conc_n, end_ms, seed=100 + i)

        day = (end_ms - DAY_MS, end_ms)  # the last full day of data
        stages = {
            "whole collection": plan_stage(client, COLL, {}),
            "one day": plan_stage(client, COLL, {"createdAt": {
                "$gte": dt.datetime.fromtimestamp(day[0] / 1000, dt.timezone.utc),
                "$lt": dt.datetime.fromtimestamp(day[1] / 1000, dt.timezone.utc)}}),
        }
        client.close()
        b = Bench(args, work, server.uri, dcb, bare, bare_insert, tools)

        def day_window():
            # dcb computes [now - initial, now - settle); written a moment before the
            # run starts, so the bounds land on `day` plus the few ms dcb takes to start.
            now = int(time.time() * 1000)
            return f"  initial: {now - day[0]}ms\n  settle: {now - day[1]}ms\n"

        kept = None if args.no_restore else {}
        cases = [
            run_case(b, "whole collection", None, lambda: "  initial: all\n  settle: 0s\n",
                     keep=kept),
            run_case(b, "one day", day, day_window),
        ]
        conc = run_concurrency(b, conc_n, end_ms) if conc_n else None
        # Last, so the export cases run against the same server state as before.
        restore = run_restore(b, kept) if kept is not None else None
        print(report(args, cases, conc, stages, restore))
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
