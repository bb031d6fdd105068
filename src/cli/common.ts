// What every itmctl command shares: option builders, the root check, output helpers.
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { Argv } from 'yargs';
import { ItmError } from '../errors.js';
import { HOOKS, type Hook } from '../module-def.js';

export interface GlobalArgs {
  json?: boolean;
  verbose?: boolean;
}

export function devOption<T>(y: Argv<T>, required = true) {
  return y.option('dev', { type: 'string', describe: 'network device', demandOption: required ? 'give the device with --dev' : false });
}
export function hookOption<T>(y: Argv<T>, describe = 'hook') {
  return y.option('hook', { type: 'string', choices: HOOKS as unknown as string[], describe });
}
export function hooksOf(hook: string | undefined, all: readonly Hook[] = HOOKS): readonly Hook[] {
  return hook ? [hook as Hook] : all;
}

/** itm needs CAP_NET_ADMIN (tc) and CAP_BPF or CAP_SYS_ADMIN (loading programs): check the
 * effective capabilities, so that a root shell stripped of them gets the same clear answer. */
export function requireRoot(): void {
  let eff = 0n;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    eff = m ? BigInt(`0x${m[1]}`) : 0n;
  } catch {
    /* no /proc: treat as unprivileged */
  }
  const has = (bit: number) => ((eff >> BigInt(bit)) & 1n) === 1n;
  const CAP_NET_ADMIN = 12,
    CAP_SYS_ADMIN = 21,
    CAP_BPF = 39;
  if (!has(CAP_NET_ADMIN) || !(has(CAP_BPF) || has(CAP_SYS_ADMIN))) {
    throw new ItmError('must run as root: itmctl loads eBPF programs and changes tc filters (needs CAP_BPF and CAP_NET_ADMIN)');
  }
}

export function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** A plain text table: columns padded to their widest cell. */
export function table(rows: string[][], indent = ''): string {
  const w: number[] = [];
  for (const r of rows)
    r.forEach((c, i) => {
      w[i] = Math.max(w[i] ?? 0, c.length);
    });
  return rows.map((r) => indent + r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ')).join('\n');
}

/** `-f FILE` (`-f -`: standard input), for the commands that read a node file */
export function fileOption<T>(y: Argv<T>) {
  return y.option('f', {
    alias: 'file',
    type: 'string',
    describe: 'the node file (YAML or JSON; - for standard input)',
    demandOption: 'give the node file with -f FILE (or -f - for standard input)',
  });
}

/** A node file's text, the name its messages give it, and where its relative paths start. */
export function readNodeFile(f: string): { text: string; file: string; base: string } {
  if (f === '-') return { text: readFileSync(0, 'utf8'), file: '<stdin>', base: process.cwd() };
  try {
    return { text: readFileSync(f, 'utf8'), file: f, base: dirname(resolve(f)) };
  } catch (e) {
    throw new ItmError(`cannot read ${f}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
}

/** JSON of a plan: its steps as data (a module's declaration is not) */
export function planJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, (k, x) => (k === 'def' || k === 'current' ? undefined : x), 2)}\n`);
}
