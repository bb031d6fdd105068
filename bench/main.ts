// `npm run bench [-- --quick]`: runs the benchmarks, prints a markdown table, and writes the
// figures to bench/results/<date>.json. Figures are reported against baselines measured in the
// same run; nothing here passes or fails on a time.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../src/catalog.js';
import type { Figure } from './common.js';
import { fastpath } from './fastpath.js';
import { userPath } from './user.js';
import { veth } from './veth.js';
import { control } from './control.js';
import { scale, scaleVeth } from './scale.js';
import { routeBench } from './route.js';
import { fleetBench } from './fleet.js';

const quick = process.argv.includes('--quick');
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
const figures: Figure[] = [];
if (!only || only === 'fastpath') figures.push(...(await fastpath({ quick })));
if (!only || only === 'veth') figures.push(...(await veth({ quick })));
if (!only || only === 'user') figures.push(...(await userPath({ quick })));
if (!only || only === 'scale') figures.push(...(await scale({ quick })), ...(await scaleVeth({ quick })));
if (!only || only === 'control') figures.push(...(await control({ quick })));
if (!only || only === 'route') figures.push(...(await routeBench({ quick })));
if (!only || only === 'fleet') figures.push(...(await fleetBench({ quick })));

const fmt = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : x.toFixed(1));
const lines = ['| figure | median | unit | runs | min–max | ratio | baseline |', '|---|---|---|---|---|---|---|'];
for (const f of figures) {
  const v = f.unit === 'ratio' ? (x: number) => x.toFixed(2) : fmt;
  lines.push(
    `| ${f.name} | ${v(f.value)} | ${f.unit} | ${f.runs} | ${v(f.spread[0])}–${v(f.spread[1])} | ${f.ratio !== undefined ? f.ratio.toFixed(2) : ''} | ${f.baseline ?? ''} |`,
  );
}
process.stdout.write(`${lines.join('\n')}\n`);
const dir = join(ROOT, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `${new Date().toISOString().replace(/[:]/g, '-').replace(/\..*/, '')}.json`);
writeFileSync(file, `${JSON.stringify(figures, null, 2)}\n`);
process.stdout.write(`\nwritten to ${file}\n`);
