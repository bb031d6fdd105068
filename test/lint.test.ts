// The linter and the formatters hold in CI as in a session: Biome over the TypeScript, clang-format
// over the C and C++ (scripts/lint.sh; npm run format writes what they would change).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

test('lint and format: Biome and clang-format find nothing to change', () => {
  const r = spawnSync('bash', [join(ROOT, 'scripts', 'lint.sh')], { cwd: ROOT, encoding: 'utf8' });
  assert.ifError(r.error);
  assert.equal(r.status, 0, `scripts/lint.sh failed (npm run format fixes what it can):\n${r.stdout}\n${r.stderr}`);
});
