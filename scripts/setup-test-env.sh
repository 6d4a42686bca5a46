#!/usr/bin/env bash
# Installs what the tests need: the test servers (SecantusDB, a MongoDB wire-protocol
# server; moto, an S3-protocol server) into a project-local virtual environment at .venv
# (pip only, versions pinned in scripts/requirements-test.txt), and Debian packages (as
# root or through passwordless sudo): the stock `age` command, with which a test opens
# an encrypted archive as an operator would; `chromium-headless-shell`, in which the
# status page test loads the page; and `fonts-noto-cjk`, so the Chinese page renders in
# screenshots. Idempotent: apt runs only when something is missing.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.venv"
python=${PYTHON:-python3}
stamp="$venv/.requirements-test.txt"

# Debian packages: when they cannot be installed here, say why and go on; the tests
# that need them fail with a message naming this script.
missing=()
command -v age >/dev/null 2>&1 || missing+=(age)
command -v chromium-headless-shell >/dev/null 2>&1 \
  || [ -x /usr/lib/chromium/chromium-headless-shell ] || missing+=(chromium-headless-shell)
[ -d /usr/share/fonts/opentype/noto ] && ls /usr/share/fonts/opentype/noto/NotoSansCJK* >/dev/null 2>&1 \
  || missing+=(fonts-noto-cjk)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    sudo=(false)
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-test-env: missing ${missing[*]} and there is no apt-get to install them" >&2
  elif [ "${sudo[*]}" = false ]; then
    echo "setup-test-env: missing ${missing[*]}; install as root: apt-get install ${missing[*]}" >&2
  elif out=$("${sudo[@]}" apt-get update -qq 2>&1 &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1); then
    echo "installed: ${missing[*]}"
  else
    echo "setup-test-env: apt-get install ${missing[*]} failed: $out" >&2
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
