// `npm run bench [-- --quick] [--only=part,...]`: runs the benchmarks (all, or the parts named),
// prints a markdown table, and writes the figures to bench/results/<date>.json. Figures are reported against baselines measured in the
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
const parts = process.argv
  .find((a) => a.startsWith('--only='))
  ?.slice('--only='.length)
  .split(',');
const run = (part: string) => !parts || parts.includes(part);
const figures: Figure[] = [];
if (run('fastpath')) figures.push(...(await fastpath({ quick })));
if (run('veth')) figures.push(...(await veth({ quick })));
if (run('user')) figures.push(...(await userPath({ quick })));
if (run('scale')) figures.push(...(await scale({ quick })), ...(await scaleVeth({ quick })));
if (run('control')) figures.push(...(await control({ quick })));
if (run('route')) figures.push(...(await routeBench({ quick })));
if (run('fleet')) figures.push(...(await fleetBench({ quick })));

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
