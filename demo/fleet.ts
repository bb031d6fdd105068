// The fleet demo: the route overlay of the route demo (A — N1 — B, A — N2 — B) defined once in a
// real etcd, in namespaces made for this run; every node's itmd follows it. One `put` adds a
// relay, every member takes it in place, and the relay in use fails.
import { setTimeout as sleep } from 'node:timers/promises';
import { Topology, startUdpFlow } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl } from '../test/itm.js';
import { CLIENT, OVERLAY_HOSTS, SERVER, longestRun, overlayPaths, pathsWhen, plainRoutes } from '../test/overlay.js';
import { Etcd, Fleet, etcdUrl, fleetDecl, overlayDoc } from '../test/fleet.js';
import type { OverlayView } from '../modules/route/paths.js';

export async function fleetDemo(say: (s?: string) => void): Promise<void> {
  say('fleet: the four-node route overlay kept in etcd, each node following it (itmd --etcd), in namespaces made for this run');
  const topo = await Topology.create(fleetDecl());
  cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
  const indent = (s: string) =>
    s
      .trimEnd()
      .split('\n')
      .map((l) => `    ${l}`)
      .join('\n');
  const toB = (v: OverlayView) => v.destinations.find((d) => d.node === 'b');
  const when = (until: (v: OverlayView) => boolean) => pathsWhen(topo, 'a', until, 30_000, 'ov1');
  const paths = async (why: string) => {
    say(`\n  # itmctl route paths --name ov1   (on A, ${why})`);
    say(indent((await itmctl(topo, 'a', ['route', 'paths', '--name', 'ov1'])).stdout));
  };
  try {
    await plainRoutes(topo);
    const etcd = new Etcd(topo);
    await etcd.start();
    const fleet = new Fleet(topo, etcd, `itmdemo${process.pid}`);
    const put = async (rel: string, v: string, show = true) => {
      // the secret is the demo's own, but a secret is shown to nobody
      if (show) say(`\n  # etcdctl put ${fleet.key(rel)} <<EOF\n${indent(v.replace(/^secret: .*$/m, 'secret: <64 hex digits>'))}\n    EOF`);
      await etcd.put(fleet.key(rel), v);
    };
    say(`\n1. etcd runs in a namespace of its own (${etcdUrl('a')} and one address per node); the overlay, with N1 its only relay:`);
    await put('overlays/ov1', overlayDoc(topo, { relays: ['n1'] }));
    for (const n of OVERLAY_HOSTS) await put(`nodes/${n}`, 'devices: {}\n', n === 'a');
    say('    (and the same empty node document for n1, n2 and b: their state is the overlays they are members of)');
    say(`\n2. Each node's agent follows the cluster: itmd --etcd http://<etcd>:2379 --cluster ${fleet.cluster} --node <id>`);
    for (const n of OVERLAY_HOSTS) fleet.startAgent(n);
    await when((v) => toB(v)?.paths.some((p) => p.alive) ?? false);
    say(`\n  # itmctl agent status   (on A)\n${indent((await itmctl(topo, 'a', ['agent', 'status'])).stdout)}`);
    await paths('the overlay came from etcd');

    say('\n3. One put adds N2 as a relay: every member derives its new view and takes it in place (no program reloaded):');
    const t = performance.now();
    await put('overlays/ov1', overlayDoc(topo, { relays: ['n1', 'n2'] }));
    await when((v) => toB(v)?.paths.filter((p) => p.alive).length === 2);
    say(`    N2's path to B is alive on A ${Math.round(performance.now() - t)} ms after the put`);
    await paths('N2 added');

    const inUse = toB(await overlayPaths(topo, 'a', 'ov1'))!.next_hop!;
    const other = inUse === 'n1' ? 'n2' : 'n1';
    say(`\n4. A 1,000 packet/s stream from A's client to B's server; ${inUse.toUpperCase()}'s link to A goes down:`);
    const flow = await startUdpFlow(topo, { from: 'a', to: 'b', family: 4, dport: 5403, ratePps: 1000, srcAddr: CLIENT, dstAddr: SERVER });
    let r;
    try {
      await sleep(500);
      await topo.exec(inUse, ['ip', 'link', 'set', 'dev', topo.dev(inUse, 'a'), 'down']);
      await when((v) => toB(v)?.next_hop === other);
      await sleep(500);
    } finally {
      r = await flow.stop();
    }
    say(`    failover: ${longestRun(r.missing)} ms without packets (${r.received} of ${r.sent} arrived), now via ${other.toUpperCase()}`);
    await paths('after the failover');

    say('\n5. etcd stops: the nodes keep what they applied and go on forwarding');
    await etcd.stop();
    await fleet.statusWhen('a', (s) => s.fleet?.connected === false);
    say(`\n  # itmctl agent status   (on A)\n${indent((await itmctl(topo, 'a', ['agent', 'status'])).stdout)}`);
  } finally {
    await topo.destroy();
    say('\ndone: etcd stopped, namespaces removed.');
  }
}
