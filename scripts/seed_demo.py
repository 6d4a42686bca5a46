"""Seed a realistic MES data set for the demo: the factory's collections with a few
days of createdAt/updatedAt, and the time-field indexes the policies rely on.

    python scripts/seed_demo.py URI [--db dcMes] [--days 3] [--scale 1.0]
"""

import argparse
import datetime as dt
import random

import pymongo

# (collection, documents per day, time field)
COLLECTIONS = [
    ("api_logs", 4000, "createdAt"),
    ("system_log", 1500, "createdAt"),
    ("scanrecords", 6000, "createdAt"),
    ("equipmentinformations", 300, "createdAt"),
    ("chat", 200, "createdAt"),
    ("sampling_inspection_flows", 400, "createdAt"),
    ("scan_code_bind_record", 2500, "createdAt"),
    ("product_initialize_logs", 1200, "createdAt"),
    ("production_plan_work_orders", 80, "createdAt"),
    ("barcodesegmentrules", 5, "updatedAt"),
    ("user_logins", 150, "updatedAt"),
    ("roles", 2, "updatedAt"),
    ("dicttypes", 3, "updatedAt"),
    ("k3_sal_saleorderexts", 60, "createdAt"),
    ("material_palletizing_error_logs", 40, "createdAt"),
    ("inspection_data", 900, "createdAt"),
]

LINES = ["SMT-01", "SMT-02", "ASSY-A", "ASSY-B", "PACK-1"]
STATIONS = ["AOI", "ICT", "FCT", "LABEL", "WEIGH", "PALLET"]


def document(coll, field, when, rnd):
    base = {
        field: when,
        "line": rnd.choice(LINES),
        "station": rnd.choice(STATIONS),
        "operator": f"op{rnd.randint(1, 120):03d}",
        "barcode": f"DC{when:%y%m%d}{rnd.randint(0, 99999999):08d}",
        "status": rnd.choice(["OK", "OK", "OK", "NG", "REWORK"]),
    }
    if field == "updatedAt":
        base["createdAt"] = when - dt.timedelta(days=rnd.randint(30, 400))
    if coll == "api_logs":
        base.update(path=rnd.choice(["/api/scan", "/api/bind", "/api/login", "/api/report"]),
                    ms=rnd.randint(2, 900), code=rnd.choice([200, 200, 200, 400, 500]))
    if coll == "production_plan_work_orders":
        base.update(workOrder=f"WO{rnd.randint(100000, 999999)}", planQty=rnd.randint(100, 5000),
                    material=f"M-{rnd.randint(1000, 9999)}")
    if coll == "inspection_data":
        base["measurements"] = [round(rnd.gauss(5.0, 0.05), 4) for _ in range(8)]
    return base


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("uri")
    ap.add_argument("--db", default="dcMes")
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    args = ap.parse_args()

    rnd = random.Random(20261125)
    db = pymongo.MongoClient(args.uri)[args.db]
    now = dt.datetime.now(dt.timezone.utc)
    total = 0
    for coll, per_day, field in COLLECTIONS:
        n = max(1, int(per_day * args.days * args.scale))
        span = args.days * 86400
        docs = [document(coll, field, now - dt.timedelta(seconds=rnd.uniform(60, span)), rnd)
                for _ in range(n)]
        db[coll].insert_many(docs, ordered=False)
        db[coll].create_index(field)
        total += n
    print(f"seeded {total} documents in {len(COLLECTIONS)} collections of `{args.db}` "
          f"over the last {args.days} days")


if __name__ == "__main__":
    main()
