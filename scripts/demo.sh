#!/usr/bin/env bash
# The main job on a local demo database, from a fresh machine: installs and starts the
# local test server, seeds a realistic MES data set, runs every shipped policy once
# (`dcb run --all`), and shows what was written. Everything lands in ./demo/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

echo "==> installing the local test server (SecantusDB) into .venv"
./scripts/setup-test-env.sh
echo "==> building dcb (release)"
cargo build --release --quiet
dcb="$root/target/release/dcb"

rm -rf demo && mkdir -p demo
echo "==> starting the demo database"
.venv/bin/python scripts/testserver.py --storage-path demo/db --no-stdin-watch > demo/server.out 2> demo/server.log &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q '^READY ' demo/server.out 2>/dev/null && break
  kill -0 $server 2>/dev/null || { cat demo/server.log; echo "the demo database did not start" >&2; exit 1; }
  sleep 0.1
done
uri=$(sed -n 's/^READY //p' demo/server.out)
echo "    $uri"

echo "==> seeding the MES data set"
.venv/bin/python scripts/seed_demo.py "$uri" --db dcMes --days 3

export DCB_CONFIG="$root/examples/dcb.yaml"
export DCB_MONGODB_URI="$uri"
export DCB_BACKUP_ROOT="$root/demo/backups"

echo "==> dcb validate --online"
"$dcb" validate --online
echo "==> dcb run --all   (policies start at midnight today, Asia/Shanghai, as the seed did)"
"$dcb" run --all

echo "==> dcb list (the catalog, from the manifests)"
"$dcb" list
first=$(find demo/backups/hot -name '*api_logs.tar.gz' | sort | head -n 1)
if [ -n "$first" ]; then
  echo "==> tar tzvf $first"
  tar tzvf "$first"
fi
echo "==> dcb verify (checksums, BSON, counts; 5 documents each compared with the database)"
"$dcb" verify --sample 5 --quiet
echo "==> dcb restore --policy hot --to-database dcMes_check (every archive verified first)"
"$dcb" restore --policy hot --to-database dcMes_check --drop
echo "==> dcb plan --policy hot (the next window starts at the new watermark)"
"$dcb" plan --policy hot
echo
echo "Archives are in demo/backups. Stock tools read them too: tar xzf ARCHIVE -C out && mongorestore --dir out"
