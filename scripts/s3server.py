"""Start a moto S3 server on a free loopback port, with authentication on, and keep
it alive exactly as long as whoever started us.

Signatures are checked and IAM policies enforced: the first three requests (made
here, unauthenticated) create an `admin` user allowed everything, whose key pair is
printed on one line once the server answers:

    READY {"endpoint": "http://127.0.0.1:PORT", "accessKeyId": ..., "secretAccessKey": ...}

Then each line on standard input is a JSON command, answered by one JSON line,
{"ok": RESULT} or {"error": MESSAGE}; the server stops when standard input closes
(the parent exited, even by kill -9). Commands (boto3 as admin):

    {"op": "bucket", "name": B}                        create bucket B
    {"op": "user", "name": U, "policy": {...}}        a user with an inline policy -> keys
    {"op": "keys", "bucket": B}                        every object key -> [key, ...]
    {"op": "get", "bucket": B, "key": K}               the object base64, or null
    {"op": "put", "bucket": B, "key": K, "body": b64}  put an object (no condition)
    {"op": "uploads", "bucket": B}                     incomplete uploads -> [[key, id, parts]]
    {"op": "start_upload", "bucket": B, "key": K, "parts": N}
                                                       N parts of 5 MiB, never completed -> id

    python scripts/s3server.py
"""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


from testserver import free_port, listens_on  # noqa: E402 (beside this script)


def server_binary() -> str:
    here = os.path.dirname(sys.executable)
    for name in ("moto_server", "moto_server.exe"):
        candidate = os.path.join(here, name)
        if os.path.exists(candidate):
            return candidate
    sys.exit("moto_server not found: run scripts/setup-test-env.sh")


def wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"moto_server exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"moto_server did not listen on {port} within {timeout}s")


def main() -> None:
    import boto3

    # Requests after the first three must be signed by a known key and allowed by
    # its user's policy.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    # Another process can take the port between choosing and binding it (tests run in
    # parallel): the server then exits, or another one listens there. Try another port.
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            [server_binary(), "-H", "127.0.0.1", "-p", str(port)],
            stdin=subprocess.DEVNULL, env=env)
        try:
            wait_listening(port, proc, 60.0)
        except SystemExit:
            if proc.poll() is None:
                raise
            continue
        mine = listens_on(proc.pid, port)
        if mine is None:
            time.sleep(2)
            mine = proc.poll() is None
        if mine:
            break
        proc.kill()
        proc.wait()
    else:
        sys.exit("could not start moto_server on a free port in 5 attempts")

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
    endpoint = f"http://127.0.0.1:{port}"
    anonymous = dict(endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam = boto3.client("iam", **anonymous)
    iam.create_user(UserName="admin")
    iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    admin = dict(endpoint_url=endpoint, region_name="us-east-1",
                 aws_access_key_id=key["AccessKeyId"],
                 aws_secret_access_key=key["SecretAccessKey"])
    s3 = boto3.client("s3", **admin)
    iam = boto3.client("iam", **admin)
    print("READY " + json.dumps({"endpoint": endpoint, "accessKeyId": key["AccessKeyId"],
                                 "secretAccessKey": key["SecretAccessKey"]}), flush=True)

    def run(cmd):
        op = cmd["op"]
        if op == "bucket":
            s3.create_bucket(Bucket=cmd["name"])
            return None
        if op == "user":
            iam.create_user(UserName=cmd["name"])
            iam.put_user_policy(UserName=cmd["name"], PolicyName="p",
                                PolicyDocument=json.dumps(cmd["policy"]))
            k = iam.create_access_key(UserName=cmd["name"])["AccessKey"]
            return {"accessKeyId": k["AccessKeyId"], "secretAccessKey": k["SecretAccessKey"]}
        if op == "keys":
            keys = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cmd["bucket"]):
                keys.extend(o["Key"] for o in page.get("Contents", []))
            return sorted(keys)
        if op == "get":
            try:
                body = s3.get_object(Bucket=cmd["bucket"], Key=cmd["key"])["Body"].read()
            except s3.exceptions.NoSuchKey:
                return None
            return base64.b64encode(body).decode()
        if op == "put":
            s3.put_object(Bucket=cmd["bucket"], Key=cmd["key"],
                          Body=base64.b64decode(cmd["body"]))
            return None
        if op == "uploads":
            found = s3.list_multipart_uploads(Bucket=cmd["bucket"]).get("Uploads", [])
            out = []
            for u in found:
                # An upload aborted between the listing and this call is gone: skip it.
                try:
                    parts = s3.list_parts(Bucket=cmd["bucket"], Key=u["Key"],
                                          UploadId=u["UploadId"]).get("Parts", [])
                except s3.exceptions.NoSuchUpload:
                    continue
                out.append([u["Key"], u["UploadId"], len(parts)])
            return out
        if op == "start_upload":
            uid = s3.create_multipart_upload(Bucket=cmd["bucket"], Key=cmd["key"])["UploadId"]
            for n in range(cmd["parts"]):
                s3.upload_part(Bucket=cmd["bucket"], Key=cmd["key"], UploadId=uid,
                               PartNumber=n + 1, Body=b"p" * (5 << 20))
            return uid
        raise ValueError(f"unknown op {op}")

    def serve():
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                answer = {"ok": run(json.loads(line))}
            except Exception as exc:  # noqa: BLE001 - the test reads the message
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), flush=True)
        stop()

    threading.Thread(target=serve, daemon=True).start()
    proc.wait()
    os._exit(proc.returncode or 0)


if __name__ == "__main__":
    main()
