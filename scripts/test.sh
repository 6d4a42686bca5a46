#!/usr/bin/env bash
# The project's one test command: installs what the tests need, then runs the quality
# gates and the whole test suite. Safe to re-run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "test server (SecantusDB) into .venv"
./scripts/setup-test-env.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo check --target x86_64-pc-windows-gnu"
if ./scripts/setup-windows-check.sh; then
  cargo check --quiet --target x86_64-pc-windows-gnu --all-targets
elif [ -n "${CI:-}" ]; then
  # CI must not pass without the Windows check it claims to run.
  echo "error: the Windows target could not be set up (CI is set); see the reason above" >&2
  exit 1
else
  echo "NOTICE: the Windows target could not be set up on this machine; the Windows check did NOT run" >&2
fi

step "Windows build under Wine: dcb.exe and the unit tests (x86_64-pc-windows-gnu, profile wine)"
# tests/windows_smoke.rs runs this dcb.exe under Wine in the test step below.
wine_ok=
if ./scripts/setup-wine.sh; then
  cargo build --quiet --profile wine --target x86_64-pc-windows-gnu --bin dcb
  CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="$root/scripts/windows/wine-run.sh" \
    cargo test --quiet --profile wine --target x86_64-pc-windows-gnu --lib
  wine_ok=1
elif [ -n "${CI:-}" ]; then
  # CI must not pass without running the Windows build it claims to run.
  echo "error: Wine could not be set up (CI is set); see the reason above" >&2
  exit 1
else
  echo "NOTICE: Wine could not be set up on this machine; the Windows unit tests and" \
    "the Windows smoke test (tests/windows_smoke.rs) did NOT run" >&2
fi

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  if [ -n "$wine_ok" ]; then
    cargo nextest run --no-fail-fast
  else
    cargo nextest run --no-fail-fast -E 'not binary(windows_smoke)'
  fi
elif [ -n "$wine_ok" ]; then
  cargo test --no-fail-fast
else
  cargo test --no-fail-fast -- --skip under_wine_
fi
