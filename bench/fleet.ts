// fleet.converge_ms: the four-node route overlay of the tests (A — N1 — B, A — N2 — B) kept in a
// real etcd (test/fleet.ts), every node's itmd following it; from the `put` of an overlay change
// to the last member having applied it (its status key says so), median of 10. The change is the
// probe timeout, which every member's view has: each member gives its route instances the new
// topology in place (six instances on A and B, four on each relay).
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { figure, summarize, type Figure } from './common.js';
import { Topology } from '../test/harness/index.js';
import { cleanItmOnDestroy } from '../test/itm.js';
import { OVERLAY_HOSTS, plainRoutes } from '../test/overlay.js';
import { Etcd, Fleet, etcdUrl, fleetDecl, overlayDoc } from '../test/fleet.js';

const PROBE_JS = join(dirname(fileURLToPath(import.meta.url)), 'fleet-probe.js');

export async function fleetBench(opts: { quick?: boolean } = {}): Promise<Figure[]> {
  const rounds = opts.quick ? 4 : 10;
  const topo = await Topology.create(fleetDecl());
  try {
    cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
    await plainRoutes(topo);
    const etcd = new Etcd(topo);
    await etcd.start();
    const fleet = new Fleet(topo, etcd, `itmb${process.pid}`);
    const ov = (timeout: number) =>
      overlayDoc(topo, { relays: ['n1', 'n2'], probe: `{ interval_ms: 100, timeout_ms: ${timeout}, dead_after: 3 }` });
    await etcd.put(fleet.key('overlays/ov1'), ov(300));
    for (const n of OVERLAY_HOSTS) await etcd.put(fleet.key(`nodes/${n}`), 'devices: {}\n');
    for (const n of OVERLAY_HOSTS) fleet.startAgent(n);
    for (const n of OVERLAY_HOSTS) await fleet.statusWhen(n, (s) => (s.fleet?.applied?.changes ?? 0) > 0, 60_000);
    const values = join(topo.tmpdir, 'values.json');
    writeFileSync(values, JSON.stringify([ov(400), ov(300)]));
    const args = { url: etcdUrl('a'), prefix: fleet.key(''), nodes: [...OVERLAY_HOSTS], key: fleet.key('overlays/ov1'), values, rounds };
    const r = await topo.exec('etcd', [process.execPath, PROBE_JS, JSON.stringify(args)], { timeoutMs: 120_000 });
    const ms = JSON.parse(r.stdout) as number[];
    return [figure('fleet.converge_ms', 'ms', summarize(ms), ms.length)];
  } finally {
    await topo.destroy();
  }
}
