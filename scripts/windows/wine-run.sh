#!/usr/bin/env bash
# Runs a Windows program under Wine: wine-run.sh PROGRAM [ARGS...]. Cargo uses it as
# the runner of the x86_64-pc-windows-gnu target (the unit tests), and
# tests/windows_smoke.rs runs dcb.exe with it. When PROGRAM is a file here (not one of
# Wine's own, such as cmd), it first puts the stub bcryptprimitives.dll beside it:
# Wine 8.0 has none, and every Rust program imports ProcessPrng from it
# (scripts/windows/bcryptprimitives.c). The stub is built with mingw into
# target/wine-stub/ when missing or older than its source. Needs scripts/setup-wine.sh.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=wine-env.sh
. "$here/wine-env.sh"
wine=/usr/lib/wine/wine64
[ $# -ge 1 ] || { echo "usage: wine-run.sh PROGRAM.exe [ARGS...]" >&2; exit 2; }
for need in "$wine" "$WINEPREFIX/system.reg"; do
  [ -e "$need" ] || { echo "wine-run: $need is missing: run scripts/setup-wine.sh" >&2; exit 2; }
done

src=$here/bcryptprimitives.c
stub=$root/target/wine-stub/bcryptprimitives.dll
if ! [ "$stub" -nt "$src" ]; then
  mkdir -p "$(dirname "$stub")"
  tmp=$(mktemp "$stub.XXXXXX")
  x86_64-w64-mingw32-gcc -shared -O2 -static-libgcc -o "$tmp" "$src" -ladvapi32
  mv -f "$tmp" "$stub"
fi
# Only beside a program of ours (a file here); Wine's own programs (cmd) need none.
if [ -f "$1" ]; then
  beside=$(dirname "$1")/bcryptprimitives.dll
  if ! cmp -s "$stub" "$beside"; then
    tmp=$(mktemp "$beside.XXXXXX")
    cp "$stub" "$tmp"
    mv -f "$tmp" "$beside"
  fi
fi
exec "$wine" "$@"
