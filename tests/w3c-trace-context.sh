#!/usr/bin/env bash
# Runs the official W3C trace-context validation suite against the instrumentation
# library's test service. Not part of `cargo test`: the suite lives in the w3c/trace-context
# repository, which CI (registries only) cannot fetch. Usage:
#   tests/w3c-trace-context.sh PATH/TO/trace-context   # a checkout of github.com/w3c/trace-context
set -euo pipefail
suite="${1:?give the path of a checkout of github.com/w3c/trace-context}"
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TMPDIR:-/tmp}/observatory-w3c-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet aiohttp
cargo build --quiet -p observatory-instrument --example w3c_test_service --manifest-path "$here/Cargo.toml"
"$here/target/debug/examples/w3c_test_service" 127.0.0.1:5000 &
service=$!
trap 'kill $service' EXIT
sleep 1
cd "$suite/test"
SPEC_LEVEL=2 "$venv/bin/python" test.py http://127.0.0.1:5000/test
