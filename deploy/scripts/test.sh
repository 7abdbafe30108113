#!/usr/bin/env bash
# The project's test command (README): machine setup, then formatting, lints, the binaries the
# end-to-end tests drive, and every test of the workspace with nextest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step() { echo; echo "=== $* ==="; }

step "setup"
deploy/scripts/setup.sh
step "bash -n on the project's scripts (the demo is not run here)"
for f in deploy/scripts/*.sh deploy/demo/*.sh deploy/bench/*.sh deploy/images/*.sh deploy/images/*/build.sh .ci/run; do bash -n "$f"; done
step "cargo fmt --all --check"
cargo fmt --all --check
step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo build --workspace --bins"
cargo build --workspace --bins
step "cargo nextest run --workspace --no-fail-fast"
cargo nextest run --workspace --no-fail-fast
