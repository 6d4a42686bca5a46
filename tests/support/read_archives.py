"""Read dcb archives with tools independent of dcb: Python's tarfile and gzip, and
pymongo's bson. Prints JSON: for each archive, its members (size, sha256), the _ids in
each .bson member (as extended JSON), and the embedded manifest."""

import hashlib
import json
import sys
import tarfile

import bson
from bson import json_util


def read(path):
    out = {"archive": path, "members": {}, "ids": {}, "manifest": None}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            out["members"][member.name] = {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            if member.name.endswith(".bson"):
                docs = bson.decode_all(data)
                out["ids"][member.name] = [json_util.dumps(d["_id"]) for d in docs]
            elif member.name.startswith("dcb-manifest."):
                out["manifest"] = json.loads(data)
    return out


if __name__ == "__main__":
    json.dump([read(p) for p in sys.argv[1:]], sys.stdout)
