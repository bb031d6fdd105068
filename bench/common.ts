// What every benchmark shares: the figure it reports, medians and spreads, ratios, the empty
// program (the floor of test-run figures) and the receiver that counts and drops UDP.
import { join } from 'node:path';
import { BPF_BUILD } from '../src/catalog.js';
import { BpfObject, type BpfProgram } from '../src/libbpf/index.js';
import type { Topology } from '../test/harness/index.js';

export interface Figure {
  name: string;
  value: number;
  unit: string;
  baseline?: string;
  ratio?: number;
  runs: number;
  spread: [number, number];
}

export interface Summary {
  median: number;
  min: number;
  max: number;
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export function summarize(xs: readonly number[]): Summary {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs) };
}

/** A measured figure, with its ratio to `base` when given. */
export function figure(name: string, unit: string, s: Summary, runs: number, base?: { name: string; value: number }): Figure {
  return {
    name,
    value: s.median,
    unit,
    runs,
    spread: [s.min, s.max],
    ...(base ? { baseline: base.name, ratio: s.median / base.value } : {}),
  };
}

/** The ratio of two measured figures' medians; its spread pairs their extremes. */
export function ratioFigure(name: string, a: Summary, b: Summary, baseline: string, runs: number): Figure {
  const r = a.median / b.median;
  return { name, value: r, unit: 'ratio', baseline, ratio: r, runs, spread: [a.min / b.max, a.max / b.min] };
}

/** ns per run of `prog` on `frame` through BPF_PROG_TEST_RUN: `runs` runs of `repeat` repeats,
 * after a warm-up. */
export function measure(prog: BpfProgram, frame: Buffer, runs: number, repeat: number): Summary {
  prog.testRun({ data: frame, repeat: 1000 });
  const ns: number[] = [];
  for (let i = 0; i < runs; i++) ns.push(prog.testRun({ data: frame, repeat }).duration);
  return summarize(ns);
}

/** As measure(), for several programs whose runs take turns: drift of the machine (the other CPU's
 * load, frequency) falls on all of them alike, as it must for a ratio between them. */
export function measureTurns(progs: readonly BpfProgram[], frame: Buffer, runs: number, repeat: number): Summary[] {
  for (const p of progs) p.testRun({ data: frame, repeat: 1000 });
  const ns: number[][] = progs.map(() => []);
  for (let i = 0; i < runs; i++) {
    for (const [k, p] of progs.entries()) ns[k]!.push(p.testRun({ data: frame, repeat }).duration);
  }
  return ns.map(summarize);
}

/** The empty tc program (bench/empty.bpf.o), loaded; the caller closes it. */
export function loadEmpty(): BpfProgram {
  const obj = BpfObject.open(join(BPF_BUILD, 'bench', 'empty.bpf.o'));
  try {
    obj.load();
    return obj.program('empty');
  } finally {
    obj.close();
  }
}

/** Makes `dev` in `host` count what arrives and drop UDP at tc ingress (bench/drop.bpf.o), so no
 * socket sets the pace; returns a reader of the device's received packets. */
export async function udpSink(topo: Topology, host: string, dev: string): Promise<() => Promise<number>> {
  await topo.exec(host, ['tc', 'qdisc', 'add', 'dev', dev, 'clsact']);
  await topo.exec(host, [
    'tc',
    'filter',
    'add',
    'dev',
    dev,
    'ingress',
    'pref',
    '1',
    'bpf',
    'da',
    'obj',
    join(BPF_BUILD, 'bench', 'drop.bpf.o'),
    'sec',
    'tc',
  ]);
  return async () => Number((await topo.exec(host, ['cat', `/sys/class/net/${dev}/statistics/rx_packets`])).stdout.trim());
}
