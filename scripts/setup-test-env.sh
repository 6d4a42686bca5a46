#!/usr/bin/env bash
# Installs what the tests need: the test servers (SecantusDB, a MongoDB wire-protocol
# server; moto, an S3-protocol server) into a project-local virtual environment at .venv
# (pip only, versions pinned in scripts/requirements-test.txt), and the stock
# `age` command (Debian's package, as root or through passwordless sudo), with which a
# test opens an encrypted archive as an operator would. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
stamp="$venv/.requirements-test.txt"

# `age`: when it cannot be installed here, say why and go on; the test that needs it
# fails under CI (and says it did not run its check elsewhere).
if ! command -v age >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    sudo=(false)
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-test-env: the age command is missing and there is no apt-get to install it (install age)" >&2
  elif [ "${sudo[*]}" = false ]; then
    echo "setup-test-env: the age command is missing; install it as root: apt-get install age" >&2
  elif out=$("${sudo[@]}" apt-get update -qq 2>&1 &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends age 2>&1); then
    echo "age installed: $(command -v age)"
  else
    echo "setup-test-env: apt-get install age failed: $out" >&2
  fi
fi

if [ -f "$stamp" ] && cmp -s "$stamp" "$root/scripts/requirements-test.txt" \
   && [ -x "$venv/bin/secantusd-py" ] && [ -x "$venv/bin/moto_server" ]; then
  exit 0
fi
if ! [ -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r "$root/scripts/requirements-test.txt"
cp "$root/scripts/requirements-test.txt" "$stamp"
echo "test servers installed: $venv/bin/secantusd-py, $venv/bin/moto_server"
