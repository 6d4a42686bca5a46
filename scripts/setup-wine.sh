#!/usr/bin/env bash
# Makes running the Windows build under Wine possible: everything the Windows check
# needs (scripts/setup-windows-check.sh: the Rust target and mingw), Debian's wine64
# (Wine 8.0, /usr/lib/wine/wine64), and a Wine prefix under target/wine-prefix,
# initialised once (nothing is written to $HOME). Installs with apt-get as root or
# through passwordless sudo. Idempotent.
# Exit 1, saying why on stderr, when any of it cannot be had here.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
fail() { echo "setup-wine: $*" >&2; exit 1; }

"$root/scripts/setup-windows-check.sh" || fail "the Windows target could not be set up (see above)"

wine=/usr/lib/wine/wine64
if ! [ -x "$wine" ]; then
  [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ] || fail "Wine is set up only on x86-64 Linux (Debian's wine64); this is $(uname -s)-$(uname -m)"
  command -v apt-get >/dev/null 2>&1 || fail "$wine is missing and there is no apt-get to install it (install Debian's wine64)"
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    fail "$wine is missing; install it as root: apt-get install wine64"
  fi
  out=$("${sudo[@]}" apt-get update -qq 2>&1 &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine64 2>&1) ||
    fail "apt-get install wine64 failed: $out"
  [ -x "$wine" ] || fail "wine64 is installed but $wine is not there"
fi

# The prefix: made once, by wineboot; the smoke test and the unit-test runner share it.
# shellcheck source=windows/wine-env.sh
. "$root/scripts/windows/wine-env.sh"
if ! [ -f "$WINEPREFIX/system.reg" ]; then
  mkdir -p "$(dirname "$WINEPREFIX")"
  out=$("$wine" wineboot --init 2>&1) || fail "wineboot --init in $WINEPREFIX failed: $out"
  # wineboot returns before the prefix is written out; the server exits when it is.
  "$(dirname "$wine")/wineserver" -w
  [ -f "$WINEPREFIX/system.reg" ] || fail "wineboot ran but $WINEPREFIX has no system.reg: $out"
fi
exit 0
