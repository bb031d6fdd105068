#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up first (installs and builds what is missing), then
# node's test runner over the compiled tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
exec node --test --test-reporter=spec "${files[@]}"
