#!/usr/bin/env bash
# Installs the test server (SecantusDB, a MongoDB wire-protocol server) into a
# project-local virtual environment at .venv. Idempotent; uses pip only.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
stamp="$venv/.requirements-test.txt"

if [ -f "$stamp" ] && cmp -s "$stamp" "$root/scripts/requirements-test.txt" \
   && [ -x "$venv/bin/secantusd-py" ]; then
  exit 0
fi
if ! [ -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/scripts/requirements-test.txt"
cp "$root/scripts/requirements-test.txt" "$stamp"
echo "test server installed: $venv/bin/secantusd-py"
