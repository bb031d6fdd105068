#!/usr/bin/env bash
# The README's main command: set-up (installs and builds what is missing), then the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/demo/main.js "$@"
