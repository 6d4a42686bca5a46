#!/usr/bin/env bash
# The main job on a local demo database: installs and starts the test server, then
# checks the shipped policies and shows what each would run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
./scripts/setup-test-env.sh
cargo build --release --quiet
dcb="$root/target/release/dcb"
export DCB_CONFIG="$root/examples/dcb.yaml"
"$dcb" validate
"$dcb" plan
