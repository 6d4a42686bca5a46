#!/usr/bin/env bash
# Makes `cargo check --target x86_64-pc-windows-gnu` possible: the Rust target, and
# the mingw C compiler that crates with C parts (ring) need even to be checked.
# Installs them when it can (rustup; apt-get as root or through passwordless sudo).
# Exit 1, saying why on stderr, when either cannot be had here.
set -uo pipefail
fail() { echo "setup-windows-check: $*" >&2; exit 1; }

if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu; then
  command -v rustup >/dev/null 2>&1 || fail "rustup is not installed, so the target x86_64-pc-windows-gnu cannot be added"
  out=$(rustup target add x86_64-pc-windows-gnu 2>&1) || fail "rustup target add x86_64-pc-windows-gnu failed: $out"
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || fail "x86_64-w64-mingw32-gcc is missing and there is no apt-get to install it (install mingw-w64)"
  if [ "$(id -u)" = 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
  else
    fail "x86_64-w64-mingw32-gcc is missing; install it as root: apt-get install gcc-mingw-w64-x86-64"
  fi
  out=$("${sudo[@]}" apt-get update -qq 2>&1 &&
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-mingw-w64-x86-64 2>&1) ||
    fail "apt-get install gcc-mingw-w64-x86-64 failed: $out"
  command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || fail "gcc-mingw-w64-x86-64 is installed but x86_64-w64-mingw32-gcc is not on PATH"
fi
exit 0
