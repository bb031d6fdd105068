// Test helpers for running itm inside a harness topology: itmctl in a host's namespace, and
// clean-up of the pins and records itm keeps for that namespace.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecResult, Topology, TopologyDecl } from './harness/index.js';

const here = dirname(fileURLToPath(import.meta.url));
export const ITMCTL = resolve(here, '..', 'src', 'cli', 'itmctl.js');
export const RUN_DIR = process.env.ITM_RUN_DIR ?? '/run/itm';

/** Runs itmctl in a host's namespace. With check (default), a non-zero exit throws. */
export function itmctl(topo: Topology, host: string, args: string[], opts: { check?: boolean } = {}): Promise<ExecResult> {
  return topo.exec(host, [process.execPath, ITMCTL, ...args], { check: opts.check ?? true });
}

export async function itmctlJson<T>(topo: Topology, host: string, args: string[]): Promise<T> {
  const r = await itmctl(topo, host, [...args, '--json']);
  return JSON.parse(r.stdout) as T;
}

/** The pin tree of a host's namespace. */
export function pinDir(topo: Topology, host: string): string {
  return join(RUN_DIR, 'bpf', String(topo.netnsInode(host)));
}

/** The pin directory of a device in a host's namespace (the hooks' trees are below it). */
export function devicePins(topo: Topology, host: string, dev: string): string {
  return join(pinDir(topo, host), String(topo.ifindex(host, dev)));
}

/** A pinned map of the module with `id` on a hook of a device. */
export function modulePin(topo: Topology, host: string, dev: string, hook: string, id: number, map: string): string {
  return join(devicePins(topo, host, dev), hook, `mod-${id}`, map);
}

/** Whatever a test leaves of itm in a host's namespace is removed when the topology goes. */
export function cleanItmOnDestroy(topo: Topology, ...hosts: string[]): void {
  for (const h of hosts) {
    const ino = String(topo.netnsInode(h));
    topo.onDestroy(async () => {
      await stopAgent(ino);
      rmSync(join(RUN_DIR, 'bpf', ino), { recursive: true, force: true });
      rmSync(join(RUN_DIR, 'state', ino), { recursive: true, force: true });
      let locks: string[] = [];
      try {
        locks = readdirSync(join(RUN_DIR, 'lock'));
      } catch {
        /* none taken */
      }
      for (const f of locks) {
        if (f === `${ino}.lock` || f.startsWith(`${ino}-`)) rmSync(join(RUN_DIR, 'lock', f), { force: true });
      }
    });
  }
}

/** Stops the itmd of a namespace, if one runs (by the PID it wrote), and removes its files. */
export async function stopAgent(ino: string): Promise<void> {
  const dir = join(RUN_DIR, 'agent');
  let pid = 0;
  try {
    pid = Number(readFileSync(join(dir, `${ino}.pid`), 'utf8').trim());
  } catch {
    /* none */
  }
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (pid > 0 && alive()) {
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 50 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
    if (alive()) process.kill(pid, 'SIGKILL');
  }
  let files: string[] = [];
  try {
    files = readdirSync(dir);
  } catch {
    /* none */
  }
  for (const f of files) if (f.startsWith(`${ino}.`)) rmSync(join(dir, f), { force: true });
}

/** client — itm — server, the itm host forwarding between two /24s (and two /64s). */
export function clientItmServer(): TopologyDecl {
  return {
    hosts: ['client', 'itm', 'server'],
    links: [
      { a: 'client', b: 'itm', addrs: { client: ['10.1.0.1/24', 'fd01::1/64'], itm: ['10.1.0.2/24', 'fd01::2/64'] } },
      { a: 'itm', b: 'server', addrs: { itm: ['10.2.0.1/24', 'fd02::1/64'], server: ['10.2.0.2/24', 'fd02::2/64'] } },
    ],
    routes: { client: ['default via 10.1.0.2', '-6 default via fd01::2'], server: ['default via 10.2.0.1', '-6 default via fd02::1'] },
    forwarding: ['itm'],
  };
}
