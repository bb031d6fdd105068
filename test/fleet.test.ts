// itmd --etcd: the route overlay of the route tests (A — N1 — B, A — N2 — B) defined only in a
// real etcd (Debian's etcd-server, in a namespace of the test's own), each node's state a key of
// its own; changes by `etcdctl put` take effect on every member in place; etcd stopped and a node
// cut off from it while traffic runs.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { DeviceView } from '../src/registry/index.js';
import { pairKey, parseOverlay } from '../modules/route/overlay.js';
import { Topology, namespaceSkipReason, startUdpFlow, tcpTransfer } from './harness/index.js';
import { cleanItmOnDestroy, itmctl, itmctlJson } from './itm.js';
import { CLIENT, OVERLAY_HOSTS, SERVER, overlayPaths, pathsWhen as pathsWhenOn, plainRoutes } from './overlay.js';
import { Etcd, Fleet, fleetDecl, overlayDoc, type Node } from './fleet.js';

describe('fleet: an overlay defined once', () => {
  const doc = `secret: ${'ab'.repeat(32)}
members:
  a: { devices: [eth0], serves: [10.40.0.0/24] }
  n1: { devices: [eth0] }
  b: { devices: [eth0], serves: [10.50.0.0/24] }
links:
  - { a: 10.31.1.1, n1: 10.31.1.2 }
  - { n1: 10.31.3.1, b: 10.31.3.2 }
`;
  test("the pairs' keys: HKDF-SHA256 of the secret over the overlay's name and the sorted ids", () => {
    const s = Buffer.from('ab'.repeat(32), 'hex');
    assert.deepEqual(pairKey(s, 'ov1', 'a', 'n1'), pairKey(s, 'ov1', 'n1', 'a'));
    assert.notDeepEqual(pairKey(s, 'ov1', 'a', 'n1'), pairKey(s, 'ov1', 'n1', 'b'));
    assert.notDeepEqual(pairKey(s, 'ov1', 'a', 'n1'), pairKey(s, 'ov2', 'a', 'n1'));
    assert.equal(pairKey(s, 'ov1', 'a', 'n1').length, 16);
    const o = parseOverlay(doc, 'ov1', '/itm/c/overlays/ov1');
    assert.deepEqual([...o.members.keys()], ['a', 'n1', 'b']);
  });
  const bad: Array<[string, string, RegExp]> = [
    ['a bad address', doc.replace('10.31.3.1', '10.31.3.300'), /ov1:8: 'n1' 10\.31\.3\.300 is not an IPv4 address/],
    ['a link to a stranger', doc.replace('{ n1: 10.31.3.1', '{ n9: 10.31.3.1'), /ov1:8: 'n9' is not a member of the overlay/],
    ['a member on no link', doc.replace('  b: {', '  c: { devices: [eth0] }\n  b: {'), /member 'c' is on no link/],
    ['no secret and no key', doc.replace(/secret: .*\n/, ''), /ov1:6: the link of 'a' and 'n1' has no 'key'/],
    ['a short secret', doc.replace(/secret: .*\n/, 'secret: abcd\n'), /ov1:1: 'secret' must be 64 hex digits/],
  ];
  for (const [what, text, want] of bad) {
    test(`refuses ${what}, naming the line, never the secret`, () => {
      assert.throws(
        () => parseOverlay(text, 'ov1', '/itm/c/overlays/ov1'),
        (e: Error) => want.test(e.message) && !e.message.includes('abab'),
      );
    });
  }
});

const etcdMissing = spawnSync('etcd', ['--version']).status === 0 ? undefined : 'etcd is not installed (scripts/setup.sh installs it)';
const skip = namespaceSkipReason() ?? etcdMissing;

describe('fleet: the route overlay kept in etcd', { skip }, () => {
  let topo: Topology;
  let etcd: Etcd;
  let fleet: Fleet;
  const put = (rel: string, v: string) => etcd.put(fleet.key(rel), v);
  const ov = (relays: Array<'n1' | 'n2'>) => put('overlays/ov1', overlayDoc(topo, { relays }));
  const aDoc = (threshold: number) => `devices:
  ${topo.dev('a', 'b')}:
    modules:
      - { module: qos, priority: 10, interest: "proto=udp,dport=9999", params: { threshold: ${threshold} } }
`;
  const paths = (h: Node) => overlayPaths(topo, h, 'ov1');
  const pathsWhen = (_t: Topology, h: Node, until: Parameters<typeof pathsWhenOn>[2], ms?: number) =>
    pathsWhenOn(topo, h, until, ms, 'ov1');
  const vias = (v: Awaited<ReturnType<typeof paths>>, dest: string) =>
    v.destinations
      .find((d) => d.node === dest)
      ?.paths.map((p) => p.via)
      .sort() ?? [];
  const alive = (v: Awaited<ReturnType<typeof paths>>, dest: string, via: string) =>
    v.destinations.find((d) => d.node === dest)?.paths.some((p) => p.via === via && p.alive) ?? false;
  const routeIds = async (h: Node) => {
    const ds = await itmctlJson<DeviceView[]>(topo, h, ['list']);
    return ds
      .flatMap((d) => d.hooks.flatMap((k) => k.modules.filter((m) => m.name === 'ov1').map((m) => `${d.dev}/${k.hook}/${m.id}`)))
      .sort();
  };

  before(async () => {
    topo = await Topology.create(fleetDecl());
    cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
    await plainRoutes(topo);
    etcd = new Etcd(topo);
    await etcd.start();
    fleet = new Fleet(topo, etcd);
    await ov(['n1']);
    await put('nodes/a', aDoc(100));
    for (const n of ['n1', 'n2', 'b'] as const) await put(`nodes/${n}`, 'devices: {}\n');
    for (const n of OVERLAY_HOSTS) fleet.startAgent(n);
  });
  after(async () => {
    if (process.env.ITM_TEST_DEBUG)
      for (const [n, p] of fleet?.agents ?? []) process.stderr.write(`--- itmd ${n}\n${p.stderr}${p.stdout}\n`);
    await topo?.destroy();
  });

  test("every node converges on the overlay; TCP from A's client to B's server goes through it", async () => {
    await pathsWhen(topo, 'a', (v) => alive(v, 'b', 'n1') && v.destinations[0]?.next_hop === 'n1', 20_000);
    await pathsWhen(topo, 'b', (v) => alive(v, 'a', 'n1'), 20_000);
    for (const n of OVERLAY_HOSTS) {
      const s = await fleet.statusWhen(n, (x) => x.fleet?.applied !== undefined);
      assert.equal(s.fleet?.connected, true, n);
    }
    assert.deepEqual(await routeIds('n2'), [], 'n2 is no member yet: nothing of the overlay there');
    const before = (await paths('a')).stats.encapsulated;
    const r = await tcpTransfer(topo, { from: 'a', to: 'b', family: 4, dport: 5301, bytes: 1_000_000, srcAddr: CLIENT, dstAddr: SERVER });
    assert.equal(r.bytes, 1_000_000);
    assert.ok((await paths('a')).stats.encapsulated - before > 100, 'the transfer went through the tunnel');
  });

  test('a relay added by one put shows on the others, in place; with A — N1 down, traffic fails over to it', async () => {
    const ids = { a: await routeIds('a'), b: await routeIds('b') };
    await ov(['n1', 'n2']);
    await pathsWhen(topo, 'a', (v) => alive(v, 'b', 'n2') && alive(v, 'b', 'n1'), 20_000);
    await pathsWhen(topo, 'b', (v) => alive(v, 'a', 'n2'), 20_000);
    assert.deepEqual(await routeIds('a'), ids.a, "a's overlay instances were given the new topology in place, not reloaded");
    assert.deepEqual(await routeIds('b'), ids.b);
    assert.ok((await routeIds('n2')).length > 0, 'n2 runs the overlay now');
    await topo.exec('n1', ['ip', 'link', 'set', 'dev', topo.dev('n1', 'a'), 'down']);
    try {
      await pathsWhen(topo, 'a', (v) => v.destinations.find((d) => d.node === 'b')?.next_hop === 'n2', 10_000);
      const r = await tcpTransfer(topo, { from: 'a', to: 'b', family: 4, dport: 5302, bytes: 500_000, srcAddr: CLIENT, dstAddr: SERVER });
      assert.equal(r.bytes, 500_000);
    } finally {
      await topo.exec('n1', ['ip', 'link', 'set', 'dev', topo.dev('n1', 'a'), 'up']);
    }
  });

  test('a changed qos threshold applies live; a bad value is refused with its reason and changes nothing', async () => {
    const qos = async () => {
      const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', topo.dev('a', 'b')]);
      return d!.hooks.find((h) => h.hook === 'tc-egress')!.modules.find((m) => m.module === 'qos')!;
    };
    const was = await qos();
    await put('nodes/a', aDoc(250));
    for (let i = 0; (await qos()).params.threshold !== 250; i++) {
      assert.ok(i < 100, 'the new threshold never applied');
      await sleep(100);
    }
    assert.equal((await qos()).id, was.id, 'in place: the same instance');
    const before = { a: vias(await paths('a'), 'b'), ids: await routeIds('a') };
    await put('overlays/ov1', overlayDoc(topo, { relays: ['n1'] }).replace('10.31.1.2', '10.31.1.300'));
    await put('nodes/a', aDoc(250).replace('threshold: 250', 'treshold: 250'));
    const s = await fleet.statusWhen('a', (x) => /nodes\/a/.test(x.fleet?.refused?.key ?? ''));
    assert.match(s.fleet!.refused!.reason, /nodes\/a:4: qos: unknown parameter "treshold"/);
    assert.match(fleet.agents.get('a')!.stderr, /fleet: refused \/itm\/\S+\/overlays\/ov1: .*10\.31\.1\.300 is not an IPv4 address/);
    assert.doesNotMatch(fleet.agents.get('a')!.stderr, /abab/, 'the secret is never logged');
    assert.deepEqual(vias(await paths('a'), 'b'), before.a, 'the overlay as it was');
    assert.deepEqual(await routeIds('a'), before.ids);
    assert.equal((await qos()).params.threshold, 250);
    await put('nodes/a', aDoc(250));
  });

  test('removing N2 from etcd removes it everywhere', async () => {
    await ov(['n1']);
    await pathsWhen(topo, 'a', (v) => vias(v, 'b').join() === 'n1', 15_000);
    await pathsWhen(topo, 'b', (v) => vias(v, 'a').join() === 'n1', 15_000);
    for (let i = 0; (await routeIds('n2')).length; i++) {
      assert.ok(i < 100, 'n2 kept the overlay');
      await sleep(100);
    }
  });

  test('etcd stopped under traffic: traffic goes on, status says disconnected; a change made while a node was cut off applies when it is back', async () => {
    await pathsWhen(topo, 'a', (v) => alive(v, 'b', 'n1'), 15_000);
    const flow = await startUdpFlow(topo, { from: 'a', to: 'b', family: 4, dport: 5303, ratePps: 200, srcAddr: CLIENT, dstAddr: SERVER });
    try {
      await etcd.stop();
      const s = await fleet.statusWhen('a', (x) => x.fleet?.connected === false);
      assert.ok(Date.parse(s.fleet!.since) > 0, 'since when');
      const human = (await itmctl(topo, 'a', ['agent', 'status'])).stdout;
      assert.match(human, /: disconnected since \d{4}-/);
      // a cut off from etcd while it is back and the cluster changes
      await topo.exec('a', ['ip', 'link', 'set', 'dev', topo.dev('a', 'etcd'), 'down']);
      await etcd.start();
      await fleet.statusWhen('b', (x) => x.fleet?.connected === true);
      await put('nodes/a', aDoc(300));
      await sleep(1500);
      const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', topo.dev('a', 'b')]);
      const qos = () => d!.hooks.find((h) => h.hook === 'tc-egress')!.modules.find((m) => m.module === 'qos')!;
      assert.equal(qos().params.threshold, 250, 'a cannot know yet');
      await topo.exec('a', ['ip', 'link', 'set', 'dev', topo.dev('a', 'etcd'), 'up']);
      await fleet.statusWhen('a', (x) => x.fleet?.connected === true && (x.fleet.applied?.revision ?? 0) > 0, 20_000);
      for (let i = 0; ; i++) {
        const [d2] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', topo.dev('a', 'b')]);
        if (d2!.hooks.find((h) => h.hook === 'tc-egress')!.modules.find((m) => m.module === 'qos')!.params.threshold === 300) break;
        assert.ok(i < 150, 'the change made meanwhile never applied');
        await sleep(100);
      }
    } finally {
      const r = await flow.stop();
      // the overlay kept forwarding: nothing of the flow lost to etcd's absence (a few at most
      // to the two CPUs' queues)
      assert.ok(r.sent > 200 && r.received >= r.sent - 5, `${r.received} of ${r.sent} received`);
    }
  });
});
