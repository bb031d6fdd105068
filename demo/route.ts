// The route demo: an overlay of four nodes in namespaces made for this run, traffic through the
// best path, that path taken down, and the failover measured.
//
//   A — N1 — B,  A — N2 — B,  and a plain A — B link that carries the route the overlay replaces
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Topology, startUdpFlow, tcpTransfer } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl } from '../test/itm.js';
import {
  CLIENT,
  OVERLAY_HOSTS,
  SERVER,
  loadOverlay,
  longestRun,
  overlayDecl,
  overlayPaths,
  pathsWhen,
  plainRoutes,
} from '../test/overlay.js';
import type { OverlayView } from '../modules/route/paths.js';

const PROBE = { interval: 100, timeout: 300, deadAfter: 3 };
const TRANSFER = 20_000_000;

export async function routeDemo(say: (s?: string) => void): Promise<{ failoverMs: number }> {
  say(
    'route: A — N1 — B and A — N2 — B, an overlay of four nodes (and a plain A — B link it does not use), in namespaces made for this run',
  );
  const topo = await Topology.create(overlayDecl());
  cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
  const dir = mkdtempSync(join(tmpdir(), 'itm-route-demo-'));
  const indent = (s: string) =>
    s
      .trimEnd()
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n');
  const paths = async (why: string) => {
    say(`\n  # itmctl route paths   (on A, ${why})`);
    say(indent((await itmctl(topo, 'a', ['route', 'paths'])).stdout));
  };
  const toB = (v: OverlayView) => v.destinations.find((d) => d.node === 'b')!;
  const relayed = async (host: string) => (await overlayPaths(topo, host)).stats.relayed;
  try {
    await plainRoutes(topo);
    say(`\n1. Without the overlay, A's client (${CLIENT}) reaches B's server (${SERVER}) over the plain A — B link:`);
    const direct = await tcpTransfer(topo, {
      from: 'a',
      to: 'b',
      family: 4,
      dport: 5301,
      bytes: TRANSFER,
      srcAddr: CLIENT,
      dstAddr: SERVER,
    });
    const mbit = (r: { bytes: number; ms: number }) => ((r.bytes * 8) / (r.ms * 1000)).toFixed(0);
    say(`    a ${TRANSFER / 1e6} MB TCP transfer: ${mbit(direct)} Mbit/s`);

    say(
      `\n2. Load route on every device of every node (probes every ${PROBE.interval} ms, a path dead after ${PROBE.deadAfter} unanswered, ${PROBE.timeout} ms timeout):`,
    );
    await loadOverlay(topo, dir, {
      probe: `{ interval_ms: ${PROBE.interval}, timeout_ms: ${PROBE.timeout}, dead_after: ${PROBE.deadAfter} }`,
    });
    say(`    itmctl load route --dev <each device> --topology ${join(dir, '<node>.yaml')}   (A's file: ${join(dir, 'a.yaml')})`);
    // settled: both paths answer, and what went unanswered while the nodes were still loading is forgotten
    await pathsWhen(topo, 'a', (v) => toB(v).paths.length > 0 && toB(v).paths.every((p) => p.alive && p.loss < 0.05), 30_000);
    await paths('the probes have found both paths');

    say('\n3. Traffic takes the best path:');
    const before = { n1: await relayed('n1'), n2: await relayed('n2') };
    const tunnel = await tcpTransfer(topo, {
      from: 'a',
      to: 'b',
      family: 4,
      dport: 5302,
      bytes: TRANSFER,
      srcAddr: CLIENT,
      dstAddr: SERVER,
    });
    const via = { n1: (await relayed('n1')) - before.n1, n2: (await relayed('n2')) - before.n2 };
    say(
      `    the same transfer through the overlay: ${mbit(tunnel)} Mbit/s (direct: ${mbit(direct)} Mbit/s); packets relayed by N1: ${via.n1}, by N2: ${via.n2}`,
    );

    const inUse = toB(await overlayPaths(topo, 'a')).next_hop!;
    const other = inUse === 'n1' ? 'n2' : 'n1';
    say(`\n4. A 1,000 packet/s stream runs from A's client to B's server; ${inUse.toUpperCase()}'s link to A goes down:`);
    const flow = await startUdpFlow(topo, { from: 'a', to: 'b', family: 4, dport: 5303, ratePps: 1000, srcAddr: CLIENT, dstAddr: SERVER });
    let r;
    try {
      await new Promise((res) => setTimeout(res, 500));
      await topo.exec(inUse, ['ip', 'link', 'set', 'dev', topo.dev(inUse, 'a'), 'down']);
      await pathsWhen(topo, 'a', (v) => toB(v).next_hop === other, 15_000);
      await new Promise((res) => setTimeout(res, 500));
    } finally {
      r = await flow.stop();
    }
    const failoverMs = longestRun(r.missing);
    say(
      `    failover: ${failoverMs} ms (the longest gap in the stream: from the link going down to packets flowing via ${other.toUpperCase()}; ${r.received} of ${r.sent} arrived; the settings promise ${PROBE.timeout + (PROBE.deadAfter + 1) * PROBE.interval} ms)`,
    );
    await paths('after the failover');

    say(
      `\n5. ${inUse.toUpperCase()}'s link comes back; the path lives again (traffic stays on ${other.toUpperCase()} unless ${inUse.toUpperCase()} is clearly faster):`,
    );
    await topo.exec(inUse, ['ip', 'link', 'set', 'dev', topo.dev(inUse, 'a'), 'up']);
    await pathsWhen(topo, 'a', (v) => toB(v).paths.every((p) => p.alive), 15_000);
    await paths('the link is back');
    return { failoverMs };
  } finally {
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
    say('\ndone: namespaces removed.');
  }
}
