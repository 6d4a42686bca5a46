#!/usr/bin/env bash
# Makes `cargo check --target x86_64-pc-windows-gnu` possible: the Rust target, and
# the mingw C compiler that crates with C parts (ring) need even to be checked.
# Exit 1 when either cannot be had here.
set -uo pipefail
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-pc-windows-gnu; then
  rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1 || exit 1
fi
if ! command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-mingw-w64-x86-64) >/dev/null 2>&1 || exit 1
  else
    exit 1
  fi
fi
exit 0
