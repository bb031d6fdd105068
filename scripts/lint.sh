#!/usr/bin/env bash
# The linter and the formatters, as the tests run them: Biome over the TypeScript (lint and
# format), clang-format over the C and C++. With --fix, writes what they would change instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t c_files < <(git ls-files '*.c' '*.h' '*.cc' 2>/dev/null || find bpf modules bench native test -name '*.[ch]' -o -name '*.cc')
if [ "${1:-}" = --fix ]; then
  npx --no-install biome check --write .
  npx --no-install biome format --write .
  clang-format -i "${c_files[@]}"
  exit 0
fi
status=0
npx --no-install biome ci --colors=off --max-diagnostics=50 . || status=1
clang-format --dry-run --Werror "${c_files[@]}" || status=1
[ $status = 0 ] || echo "lint: run npm run format to fix what the formatters can (scripts/lint.sh --fix)" >&2
exit $status
