// The route module: its topology file, its tag (SipHash-2-4, TypeScript and kernel alike), and the
// overlay on real namespaces: A — N1, A — N2, N1 — B, N2 — B, A — B, itm on every node. A's client
// (10.40.0.1) talks to B's server (10.50.0.1); the A — B link carries the plain route between them,
// but the overlay has no direct path there, so every packet goes through a neighbour.
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BpfMap } from '../src/libbpf/index.js';
import type { DeviceView } from '../src/registry/index.js';
import type { AgentStatus } from '../src/agent/protocol.js';
import { siphash24 } from '../modules/route/siphash.js';
import { MAX_INNER, lastNh, nhReference, tagKey } from '../modules/route/tag.js';
import { tagOf } from '../modules/route/wire.js';
import { parseTopology, wireId } from '../modules/route/topology.js';
import { readStats, type RouteCounters } from '../modules/route/module.js';
import type { OverlayView } from '../modules/route/paths.js';
import {
  Topology,
  buildPacket,
  capture,
  namespaceSkipReason,
  netCounters,
  parsePacket,
  sendFrames,
  startUdpFlow,
  tcpTransfer,
  udpFlow,
  type ParsedPacket,
} from './harness/index.js';
import { cleanItmOnDestroy, devicePins, itmctl, itmctlJson, modulePin } from './itm.js';
import {
  OVERLAY_HOSTS,
  loadOverlay,
  longestRun,
  overlayPaths,
  pathsWhen as pathsWhenOn,
  overlayDecl,
  overlayKey as KEY,
  plainRoutes,
} from './overlay.js';
import * as itmAbi from '../src/abi.js';

describe('route: SipHash-2-4', () => {
  test('the reference vectors (key 00..0f, message 00..n-1)', () => {
    const key = Buffer.from(Array.from({ length: 16 }, (_, i) => i));
    const msg = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => i));
    assert.equal(siphash24(key, msg(0)).toString('hex'), '310e0edd47db6f72');
    assert.equal(siphash24(key, msg(1)).toString('hex'), 'fd67dc93c539f874');
    assert.equal(siphash24(key, msg(8)).toString('hex'), '6224939a79f5f593');
    assert.equal(siphash24(key, msg(15)).toString('hex'), 'e545be4961ca29a1');
  });
});

describe('route: the tag (NH, then SipHash-2-4)', () => {
  const key = tagKey(Buffer.from(KEY(7), 'hex'));
  const rand = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 2654435761 + seed * 40503) >>> 24));
  test('the fast NH is NH as RFC 4418 writes it (BigInt), both passes, at every length mod 8 and at the longest', () => {
    for (const n of [0, 1, 7, 8, 9, 63, 64, 1396, 1399, MAX_INNER]) {
      const pkt = Buffer.concat([Buffer.alloc(32, 0xa5), rand(n, n)]);
      tagOf(pkt, key);
      const inner = pkt.subarray(32);
      assert.deepEqual(lastNh(), [nhReference(key.nh, inner, 0), nhReference(key.nh, inner, 4)], `${n} bytes`);
    }
    // words that make every product and sum carry
    const ones = Buffer.concat([Buffer.alloc(32), Buffer.alloc(MAX_INNER, 0xff)]);
    tagOf(ones, key);
    assert.deepEqual(lastNh(), [nhReference(key.nh, ones.subarray(32), 0), nhReference(key.nh, ones.subarray(32), 4)]);
  });
  test("the tag covers the header's first 24 bytes and every inner byte but the checksum left out, and the length", () => {
    const pkt = Buffer.concat([Buffer.alloc(32, 0x11), rand(200, 1)]);
    const t = tagOf(pkt, key, 32 + 36);
    const differs = (b: Buffer, what: string, csum?: number) =>
      assert.notEqual(tagOf(b, key, csum).toString('hex'), t.toString('hex'), what);
    for (const at of [0, 8, 16, 23, 32, 100, 231]) {
      const b = Buffer.from(pkt);
      b[at]! ^= 1;
      differs(b, `byte ${at}`, 32 + 36);
    }
    const c = Buffer.from(pkt);
    c[32 + 36]! ^= 0xff;
    assert.equal(tagOf(c, key, 32 + 36).toString('hex'), t.toString('hex'), 'the checksum left out');
    const tagField = Buffer.from(pkt);
    tagField.fill(0x77, 24, 32);
    assert.equal(tagOf(tagField, key, 32 + 36).toString('hex'), t.toString('hex'), 'the tag field is not its own input');
    differs(Buffer.concat([pkt, Buffer.alloc(1)]), 'a zero byte more', 32 + 36);
    assert.notEqual(tagOf(pkt, tagKey(Buffer.from(KEY(8), 'hex')), 32 + 36).toString('hex'), t.toString('hex'), 'another key');
  });
});

describe('route: topology file', () => {
  const good = `node: a
address: 10.0.0.1
neighbours:
  - id: n1
    address: 10.0.1.2
    key: ${KEY(1)}
destinations:
  - prefix: 10.50.0.0/24
    node: b
`;
  test('a good file', () => {
    const t = parseTopology(good, 'a.yaml');
    assert.equal(t.node, 'a');
    assert.equal(t.port, 7946);
    assert.equal(t.neighbours[0]!.wire, wireId('n1'));
    assert.equal(t.destinations[0]!.prefix.text, '10.50.0.0/24');
    assert.deepEqual(t.probe, { intervalMs: 500, timeoutMs: 1000, deadAfter: 3 });
  });
  const bad: Array<[string, string, RegExp]> = [
    ['an unknown key', good.replace('address: 10.0.1.2', 'adress: 10.0.1.2'), /a\.yaml:5: unknown key 'adress' in a neighbour/],
    [
      'a duplicate id',
      good.replace('destinations:', `  - id: n1\n    address: 10.0.1.3\n    key: ${KEY(2)}\ndestinations:`),
      /a\.yaml:7: duplicate neighbour id 'n1'/,
    ],
    ['a bad prefix', good.replace('10.50.0.0/24', '10.50.0.0/33'), /a\.yaml:8: bad prefix: prefix length \/33/],
    ['a missing key', good.replace(`    key: ${KEY(1)}\n`, ''), /a\.yaml:4: neighbour 'n1' has no 'key'/],
    ['a short key', good.replace(KEY(1), 'abcd'), /a\.yaml:6: the key of 'n1' must be 32 hex digits/],
    ['a duplicate key in a mapping', good.replace('node: a\n', 'node: a\nnode: c\n'), /a\.yaml:2: .*unique/i],
    ['an IPv6 underlay', good.replace('address: 10.0.1.2', 'address: fd00::2'), /a\.yaml:5: 'address' fd00::2 is not an IPv4 address/],
  ];
  for (const [what, text, want] of bad) {
    test(`refuses ${what}, naming the line`, () => assert.throws(() => parseTopology(text, 'a.yaml'), want));
  }
});

const skip = namespaceSkipReason();
const PORT = 7946;

/** route's counters on `host`, read through its instance `name` at tc-ingress of `dev` (one set
 * for the node, whatever device it is read through) */
async function routeStats(topo: Topology, host: string, dev: string, name = 'route'): Promise<RouteCounters> {
  const [d] = await itmctlJson<DeviceView[]>(topo, host, ['list', '--dev', dev]);
  const m = d!.hooks.find((h) => h.hook === 'tc-ingress')!.modules.find((x) => x.name === name)!;
  const maps: BpfMap[] = [];
  try {
    return readStats((map) => {
      const b = BpfMap.fromPin(modulePin(topo, host, dev, 'tc-ingress', m.id, map));
      maps.push(b);
      return b;
    });
  } finally {
    for (const b of maps) b.close();
  }
}

describe('route: the overlay in the kernel', { skip }, () => {
  let topo: Topology;
  let dir: string;
  const devs: Record<string, string[]> = {};

  /** route's counters on `host` (one set for the node, whatever device it is read through) */
  const stats = (host: string, name = 'route') => routeStats(topo, host, devs[host]![0]!, name);

  before(async () => {
    topo = await Topology.create(overlayDecl());
    cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
    await plainRoutes(topo);
    dir = mkdtempSync(join(tmpdir(), 'itm-route-'));
    for (const host of OVERLAY_HOSTS) devs[host] = topo.devs(host).map((d) => d.dev);
    await loadOverlay(topo, dir, { probe: '{ interval_ms: 100, timeout_ms: 300, dead_after: 3 }' });
  });
  after(async () => {
    await topo?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('one load puts route at both tc hooks of a device, and list shows them', async () => {
    const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', topo.dev('a', 'b')]);
    const at = d!.hooks
      .filter((h) => h.modules.some((m) => m.name === 'route'))
      .map((h) => h.hook)
      .sort();
    assert.deepEqual(at, ['tc-egress', 'tc-ingress']);
    const eg = d!.hooks.find((h) => h.hook === 'tc-egress')!.modules[0]!;
    assert.match(eg.interest, /dst=10\.50\.0\.0\/24/);
    assert.doesNotMatch(eg.interest, /10\.40\.0\.0/, 'not its own destinations');
    const ing = d!.hooks.find((h) => h.hook === 'tc-ingress')!.modules[0]!;
    assert.match(ing.interest, new RegExp(`proto=udp.*dport=${PORT}`));
  });

  /** `itmctl route paths` on a host, once `until` holds of it (or throws after `ms`) */
  const pathsWhen = (host: string, until: (v: OverlayView) => boolean, ms?: number) => pathsWhenOn(topo, host, until, ms);
  const allAlive = (v: OverlayView) => v.destinations.every((d) => d.paths.length > 0 && d.paths.every((p) => p.alive && p.answered > 0));

  test('the control plane probes every path to each destination, authenticated, and shows them', async () => {
    // equal paths settle on the first neighbour: at once, or after the controller's hold should a
    // probe lost at the start have sent traffic the other way first
    const a = await pathsWhen('a', (v) => allAlive(v) && v.destinations.find((d) => d.node === 'b')?.next_hop === 'n1');
    const b = a.destinations.find((d) => d.node === 'b')!;
    assert.deepEqual(
      b.paths.map((p) => p.via),
      ['n1', 'n2'].sort((x, y) => wireId(x) - wireId(y)),
    );
    assert.equal(b.next_hop, 'n1', `the first neighbour, both being as good: ${JSON.stringify(b.paths)}`);
    assert.ok(
      b.paths.every((p) => p.rtt_ms !== null && p.rtt_ms > 0 && p.rtt_ms < 1000),
      JSON.stringify(b.paths),
    );
    assert.equal(
      b.paths
        .filter((p) => p.in_use)
        .map((p) => p.via)
        .join(),
      'n1',
    );
    await pathsWhen('b', allAlive);
    const human = (await itmctl(topo, 'a', ['route', 'paths'])).stdout;
    assert.match(human, /b \(10\.50\.0\.0\/24\): via n1/);
    assert.match(human, /\*\s+via n1\s+\d+\.\d+ ms/);
    // probes and answers went through the kernel's checks like data: none refused
    for (const h of ['a', 'n1', 'n2', 'b']) {
      const s = await stats(h);
      assert.equal(s.bad_tag + s.replayed + s.not_peer + s.bad_hops + s.errors, 0, `${h}: ${JSON.stringify(s)}`);
    }
    assert.ok((await stats('n1')).relayed > 0 && (await stats('b')).to_control > 0);
  });

  test("a ping from A's client reaches B's server through the overlay, via N1, both ways", async () => {
    const before = { a: await stats('a'), n1: await stats('n1'), b: await stats('b') };
    const onAN1 = await capture(topo, 'n1', { dev: topo.dev('n1', 'a'), filter: `udp port ${PORT}`, snaplen: 200 });
    const onAB = await capture(topo, 'b', { dev: topo.dev('b', 'a'), filter: 'icmp' });
    const r = await topo.exec('a', ['ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', '10.40.0.1', '10.50.0.1'], { check: false });
    await onAN1.stop(300);
    await onAB.stop(100);
    assert.match(r.stdout, /3 received/, r.stdout);
    const tunnel = await onAN1.stop();
    const seen = await onAB.stop();
    assert.equal(seen.length, 0, 'nothing crosses the A — B link unencapsulated');
    const out = tunnel.filter((p) => p.src === '10.31.1.1' && p.dst === '10.31.1.2');
    const back = tunnel.filter((p) => p.src === '10.31.1.2' && p.dst === '10.31.1.1');
    assert.ok(out.length >= 3 && back.length >= 3, `requests and replies tunnelled on A — N1 (${out.length} out, ${back.length} back)`);
    const after = { a: await stats('a'), n1: await stats('n1'), b: await stats('b') };
    assert.ok(after.a.encapsulated - before.a.encapsulated >= 3);
    assert.ok(after.a.decapsulated - before.a.decapsulated >= 3);
    assert.ok(after.n1.relayed - before.n1.relayed >= 6);
    assert.ok(after.b.decapsulated - before.b.decapsulated >= 3);
    for (const s of Object.values(after)) assert.equal(s.bad_tag + s.replayed + s.not_peer + s.errors, 0, JSON.stringify(s));
  });

  test("the kernel's tag is the one TypeScript computes (NH, then SipHash-2-4), the inner DSCP is on the outer header", async () => {
    const cap = await capture(topo, 'n1', {
      dev: topo.dev('n1', 'a'),
      filter: `udp dst port ${PORT} and src host 10.31.1.1 and udp[9] = 1`,
      snaplen: 1500,
    });
    await topo.exec('a', ['ping', '-c', '1', '-W', '2', '-Q', String(46 << 2), '-I', '10.40.0.1', '10.50.0.1'], { check: false });
    await cap.stop(300);
    const [p] = await cap.stop();
    assert.ok(p, 'a tunnel packet');
    const region = Buffer.from(p.payload!);
    assert.equal(region[0], 2, 'version 2');
    assert.equal(region.readUInt32BE(4), wireId('a'), 'from a');
    assert.equal(region.readUInt32BE(12), wireId('b'), 'to b');
    const tag = Buffer.from(region.subarray(24, 32));
    // an ICMP echo inside: nothing left out (only a TCP or UDP checksum is)
    assert.equal(region[32 + 9], 1, 'an ICMP echo inside');
    assert.equal(tagOf(region, tagKey(Buffer.from(KEY(1), 'hex'))).toString('hex'), tag.toString('hex'));
    assert.equal(p.dscp, 46, "the inner packet's EF is on the outer header");
    assert.equal(parsePacket(region.subarray(32), { linkType: 'raw' }).dscp, 46, 'and on the inner one');
  });

  test("a TCP transfer from A's client to B's server goes through the overlay (MSS clamped)", async () => {
    const before = await stats('a');
    const r = await tcpTransfer(topo, {
      from: 'a',
      to: 'b',
      family: 4,
      dport: 5201,
      bytes: 2_000_000,
      srcAddr: '10.40.0.1',
      dstAddr: '10.50.0.1',
    });
    assert.equal(r.bytes, 2_000_000);
    const s = await stats('a');
    assert.ok(s.encapsulated - before.encapsulated > 1000, 'segments went through the tunnel');
    assert.ok(s.mss_clamped - before.mss_clamped >= 1, "the SYN's MSS was clamped");
    assert.equal(s.too_big - before.too_big, 0, 'nothing was too big for the tunnel');
  });

  test('injected tunnel packets (not a peer, wrong tag, replayed, truncated) are dropped and counted', async () => {
    // a real tunnel packet from N1 to B, captured, then sent again as it is and altered
    // a data packet (type 1), not a probe
    const cap = await capture(topo, 'b', { dev: topo.dev('b', 'n1'), filter: `udp dst port ${PORT} and udp[9] = 1`, snaplen: 1500 });
    await topo.exec('a', ['ping', '-c', '1', '-W', '2', '-I', '10.40.0.1', '10.50.0.1'], { check: false });
    await cap.stop(300);
    const [orig] = await cap.stop();
    assert.ok(orig, 'a tunnel packet on N1 — B');
    const before = await stats('b');
    const echoes = (await netCounters(topo, 'b'))['Icmp.InEchos']!;
    const frame = Buffer.from(orig.raw!);
    const hdr = 14 + 20 + 8;
    const badTag = Buffer.from(frame);
    badTag.writeUInt8(badTag.readUInt8(frame.length - 1) ^ 0x55, frame.length - 1); // a byte of the inner packet
    const notPeer = buildPacket({
      family: 4,
      src: '10.31.3.9',
      dst: '10.31.3.2',
      proto: 'udp',
      sport: 40000,
      dport: PORT,
      payload: frame.subarray(hdr),
      srcMac: orig.srcMac,
      dstMac: orig.dstMac,
    });
    const truncated = buildPacket({
      family: 4,
      src: '10.31.3.1',
      dst: '10.31.3.2',
      proto: 'udp',
      sport: 40000,
      dport: PORT,
      payload: frame.subarray(hdr, hdr + 20),
      srcMac: orig.srcMac,
      dstMac: orig.dstMac,
    });
    // frames go out of N1's device towards B as they are
    await sendFrames(topo, 'n1', topo.dev('n1', 'b'), [frame, badTag, notPeer, truncated], { gapMs: 20 });
    await new Promise((r) => setTimeout(r, 300));
    const s = await stats('b');
    assert.equal(s.replayed - before.replayed, 1, 'the replay');
    assert.equal(s.bad_tag - before.bad_tag, 1, 'the altered packet');
    assert.equal(s.not_peer - before.not_peer, 1, 'the stranger');
    assert.equal(s.truncated - before.truncated, 1, 'the stub');
    assert.equal(s.decapsulated - before.decapsulated, 0, 'none was decapsulated');
    assert.equal((await netCounters(topo, 'b'))['Icmp.InEchos'], echoes, "no echo request reached B's stack");
  });

  /** The longest outage of a 1,000 packet/s UDP stream from A's client to B's server while
   * `fail` breaks a path, until `settled` holds of A's paths. */
  async function outage(
    fail: () => Promise<void>,
    settled: (v: OverlayView) => boolean,
  ): Promise<{ ms: number; sent: number; received: number }> {
    const flow = await startUdpFlow(topo, {
      from: 'a',
      to: 'b',
      family: 4,
      dport: 6100,
      ratePps: 1000,
      srcAddr: '10.40.0.1',
      dstAddr: '10.50.0.1',
    });
    let r;
    try {
      await sleep(300);
      await fail();
      await pathsWhen('a', settled);
      await sleep(300);
    } finally {
      r = await flow.stop();
    }
    return { ms: longestRun(r.missing), sent: r.sent, received: r.received };
  }
  const via = (v: OverlayView) => v.destinations.find((d) => d.node === 'b')!.next_hop;
  const pathTo = (v: OverlayView, through: string) => v.destinations.find((d) => d.node === 'b')!.paths.find((p) => p.via === through)!;
  // what the probe settings promise: dead_after probes unanswered, the last after timeout_ms, and
  // the cycle that notices it
  const PROMISE_MS = 300 + (3 + 1) * 100;

  test('failover: the A — N1 link goes down, traffic moves to N2 within what the probes promise', async (t) => {
    assert.equal(via(await pathsWhen('a', allAlive)), 'n1');
    const dev = topo.dev('n1', 'a');
    const o = await outage(
      () => topo.exec('n1', ['ip', 'link', 'set', 'dev', dev, 'down']).then(() => undefined),
      (v) => via(v) === 'n2',
    );
    t.diagnostic(`failover (link down): ${o.ms} ms without packets (${o.received}/${o.sent} received; promised ${PROMISE_MS} ms)`);
    assert.ok(o.ms <= 2 * PROMISE_MS + 1000, `traffic came back after ${o.ms} ms`);
    assert.ok(o.received > o.sent - 2 * PROMISE_MS - 1000, `${o.received}/${o.sent}`);
    const v = await pathsWhen('a', (x) => !pathTo(x, 'n1').alive);
    assert.equal(pathTo(v, 'n2').in_use, true);
    // back up: the path lives again, and traffic settles back on it, the first of equals, once
    // the controller's hold is over
    await topo.exec('n1', ['ip', 'link', 'set', 'dev', dev, 'up']);
    await pathsWhen('a', (x) => pathTo(x, 'n1').alive && via(x) === 'n1');
  });

  test('failover: N1 silently stops reaching B, only the probes can tell, traffic moves to N2', async (t) => {
    assert.equal(via(await pathsWhen('a', (x) => allAlive(x) && via(x) === 'n1')), 'n1');
    // N1 keeps its link to A: A's underlay is fine, its probes through N1 go unanswered
    const o = await outage(
      () => topo.exec('b', ['ip', 'link', 'set', 'dev', topo.dev('b', 'n1'), 'down']).then(() => undefined),
      (v) => via(v) === 'n2',
    );
    t.diagnostic(`failover (silent): ${o.ms} ms without packets (${o.received}/${o.sent} received; promised ${PROMISE_MS} ms)`);
    assert.ok(o.ms <= 2 * PROMISE_MS + 1000, `traffic came back after ${o.ms} ms`);
    await topo.exec('b', ['ip', 'link', 'set', 'dev', topo.dev('b', 'n1'), 'up']);
    await pathsWhen('a', (x) => allAlive(x) && via(x) === 'n1');
  });

  test('path choice: a loaded, rate-limited N1 — B link makes the path via N1 slow; the probes pick N2', async () => {
    assert.equal(via(await pathsWhen('a', (x) => allAlive(x) && via(x) === 'n1')), 'n1');
    const dev = topo.dev('n1', 'b');
    await topo.exec('n1', ['tc', 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', '4mbit', 'burst', '8kb', 'latency', '60ms']);
    const load = await startUdpFlow(topo, {
      from: 'n1',
      to: 'b',
      family: 4,
      dport: 6200,
      ratePps: 2000,
      payloadSize: 1000,
      srcAddr: '10.31.3.1',
      dstAddr: '10.31.3.2',
    });
    try {
      const v = await pathsWhen('a', (x) => via(x) === 'n2', 15_000);
      const slow = pathTo(v, 'n1'),
        fast = pathTo(v, 'n2');
      assert.ok(slow.rtt_ms === null || fast.rtt_ms! < slow.rtt_ms || slow.loss > fast.loss, JSON.stringify(v.destinations));
      const r = await udpFlow(topo, {
        from: 'a',
        to: 'b',
        family: 4,
        dport: 6101,
        ratePps: 500,
        count: 200,
        srcAddr: '10.40.0.1',
        dstAddr: '10.50.0.1',
      });
      assert.equal(r.received, 200, "the overlay's traffic does not queue behind the load");
    } finally {
      await load.stop();
      await topo.exec('n1', ['tc', 'qdisc', 'del', 'dev', dev, 'root'], { check: false });
    }
    await pathsWhen('a', allAlive);
  });

  test('two overlays at once: TCP to port 8080 goes through "web" (its own port, keys and relay), the rest through "route"', async () => {
    const web = (host: string) => [
      '--name',
      'web',
      '--priority',
      '10',
      '--interest',
      host === 'a' ? 'proto=tcp,dport=8080' : 'proto=tcp,sport=8080',
    ];
    await loadOverlay(
      topo,
      dir,
      { port: 7947, keyBase: 10, through: ['n2'], probe: '{ interval_ms: 100, timeout_ms: 300, dead_after: 3 }' },
      web,
      'web-',
    );
    try {
      const v = await pathsWhen('a', allAlive);
      const w = await overlayPaths(topo, 'a', 'web');
      assert.equal(w.port, 7947);
      assert.deepEqual(
        w.destinations.find((d) => d.node === 'b')!.paths.map((p) => p.via),
        ['n2'],
        'web knows only N2',
      );
      assert.equal(v.port, 7946);
      const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', topo.dev('a', 'b')]);
      assert.deepEqual(
        d!.hooks.find((h) => h.hook === 'tc-egress')!.modules.map((m) => m.name),
        ['web', 'route'],
        'web runs first at egress',
      );

      const before = { web: await stats('a', 'web'), route: await stats('a'), n2: await stats('n2', 'web'), bWeb: await stats('b', 'web') };
      const onWeb = await capture(topo, 'n2', { dev: topo.dev('n2', 'a'), filter: 'udp port 7947', snaplen: 100 });
      const r = await tcpTransfer(topo, {
        from: 'a',
        to: 'b',
        family: 4,
        dport: 8080,
        bytes: 1_000_000,
        srcAddr: '10.40.0.1',
        dstAddr: '10.50.0.1',
      });
      assert.equal(r.bytes, 1_000_000);
      await topo.exec('a', ['ping', '-c', '3', '-i', '0.2', '-W', '2', '-I', '10.40.0.1', '10.50.0.1']);
      await onWeb.stop(200);
      const seen = await onWeb.stop();
      const after = { web: await stats('a', 'web'), route: await stats('a'), n2: await stats('n2', 'web'), bWeb: await stats('b', 'web') };
      const d2 = (k: keyof typeof after, f: keyof RouteCounters) => after[k][f] - before[k][f];
      assert.ok(d2('web', 'encapsulated') > 500, `the transfer went into web (${d2('web', 'encapsulated')})`);
      assert.ok(d2('n2', 'relayed') > 500, "through N2's web relay");
      assert.ok(d2('bWeb', 'decapsulated') > 500, 'out of web at B');
      assert.ok(seen.length > 500, `on the wire to port 7947 (${seen.length})`);
      const routeEncap = d2('route', 'encapsulated');
      assert.ok(routeEncap >= 3 && routeEncap < 50, `the pings (only) went into route (${routeEncap})`);
      for (const h of ['a', 'n2', 'b']) {
        const s = await stats(h, 'web');
        assert.equal(s.bad_tag + s.replayed + s.not_peer + s.bad_key, 0, `${h}: ${JSON.stringify(s)}`);
      }
    } finally {
      for (const host of ['a', 'n2', 'b'])
        for (const dev of devs[host]!) await itmctl(topo, host, ['unload', 'web', '--dev', dev], { check: false });
    }
  });

  test("unload takes route off both hooks; route leaves the device's GSO settings as they were", async () => {
    const dev = topo.dev('n2', 'b');
    const gso = async () => {
      const l = (
        JSON.parse((await topo.exec('n2', ['ip', '-j', '-d', 'link', 'show', 'dev', dev])).stdout) as Array<{
          gso_max_segs: number;
          gso_max_size: number;
        }>
      )[0]!;
      return [l.gso_max_segs, l.gso_max_size];
    };
    const loaded = await gso();
    await itmctl(topo, 'n2', ['unload', 'route', '--dev', dev]);
    const [d] = await itmctlJson<DeviceView[]>(topo, 'n2', ['list', '--dev', dev]);
    assert.ok(d!.hooks.every((h) => h.modules.length === 0));
    assert.deepEqual(loaded, await gso(), 'the same with route loaded and without');
    assert.equal(loaded[0], 65535, "the kernel's own");
    await itmctl(topo, 'n2', ['load', 'route', '--dev', dev, '--topology', join(dir, 'n2.yaml')]);
  });
  test('the same transfer with --datapath user (A, N1 and N2 in TypeScript over AF_XDP, B in the kernel) gives the same bytes', async () => {
    // a node's instances share their maps, so all go before the first comes back
    for (const host of ['a', 'n1', 'n2']) {
      for (const dev of devs[host]!) await itmctl(topo, host, ['unload', 'route', '--dev', dev]);
      if (host === 'a') {
        const bad = await itmctl(
          topo,
          'a',
          ['load', 'route', '--dev', devs.a![0]!, '--topology', join(dir, 'a.yaml'), '--datapath', 'sideways'],
          { check: false },
        );
        assert.notEqual(bad.code, 0);
        assert.match(bad.stderr, /invalid --datapath 'sideways': use kernel or user/);
        const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', devs.a![0]!]);
        assert.ok(
          d!.hooks.every((h) => h.modules.length === 0),
          'nothing was loaded',
        );
      }
      for (const dev of devs[host]!)
        await itmctl(topo, host, ['load', 'route', '--dev', dev, '--topology', join(dir, `${host}.yaml`), '--datapath', 'user']);
    }
    const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', topo.dev('a', 'n1')]);
    assert.deepEqual(
      d!.hooks.flatMap((h) => h.modules.filter((m) => m.name === 'route').map((m) => m.kind)),
      ['user', 'user'],
      'both hooks divert to a host',
    );
    assert.equal((await pathsWhen('a', allAlive)).datapath, 'user');
    assert.match((await itmctl(topo, 'a', ['route', 'paths'])).stdout, /data path in user space/);
    await pathsWhen('b', allAlive);
    const hosts = ['a', 'n1', 'n2', 'b'];
    const before = Object.fromEntries(await Promise.all(hosts.map(async (h) => [h, await stats(h)] as const)));
    const r = await tcpTransfer(topo, {
      from: 'a',
      to: 'b',
      family: 4,
      dport: 5202,
      bytes: 2_000_000,
      srcAddr: '10.40.0.1',
      dstAddr: '10.50.0.1',
    });
    assert.equal(r.bytes, 2_000_000);
    const after = Object.fromEntries(await Promise.all(hosts.map(async (h) => [h, await stats(h)] as const)));
    const grew = (h: string, k: keyof RouteCounters) => after[h]![k] - before[h]![k];
    assert.ok(grew('a', 'encapsulated') > 1000, `A encapsulated the segments in TypeScript: ${JSON.stringify(after.a)}`);
    assert.ok(grew('a', 'mss_clamped') >= 1, "and clamped the SYN's MSS");
    assert.ok(grew('a', 'decapsulated') > 100, "and decapsulated the ACKs B's kernel sent");
    assert.ok(grew('n1', 'relayed') + grew('n2', 'relayed') > 1100, 'the relays relayed both ways in TypeScript');
    assert.ok(grew('b', 'decapsulated') > 1000, "B's kernel took what the user data path sent");
    for (const h of hosts)
      assert.equal(
        grew(h, 'bad_tag') + grew(h, 'replayed') + grew(h, 'not_peer') + grew(h, 'errors') + grew(h, 'too_big'),
        0,
        `${h}: ${JSON.stringify(after[h])}`,
      );
    // one unload takes the user data path off both hooks too, hosts and all
    const dev = topo.dev('a', 'n2');
    const un = await itmctl(topo, 'a', ['unload', 'route', '--dev', dev]);
    assert.match(
      un.stdout,
      /unloaded from eth-\S+ tc-ingress[\s\S]*unloaded from eth-\S+ tc-egress|unloaded from eth-\S+ tc-egress[\s\S]*unloaded from eth-\S+ tc-ingress/,
    );
    const [gone] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', dev]);
    assert.ok(!gone || gone.hooks.every((h) => h.modules.length === 0), JSON.stringify(gone));
    const status = await itmctlJson<{ hosts: Array<{ dev: string }> }>(topo, 'a', ['agent', 'status']);
    assert.ok(
      status.hosts.every((h) => h.dev !== dev),
      `no host left for ${dev}: ${JSON.stringify(status.hosts)}`,
    );
  });
});

describe('route at the gateway: C — A — overlay — B — S, offloads as the kernel sets them', { skip }, () => {
  let topo: Topology;
  let dir: string;
  const devs: Record<string, string[]> = {};
  let gsoBefore: number[] = [];
  const gsoOf = async (host: string, dev: string) => {
    const l = (
      JSON.parse((await topo.exec(host, ['ip', '-j', '-d', 'link', 'show', 'dev', dev])).stdout) as Array<{
        gso_max_segs: number;
        gso_max_size: number;
      }>
    )[0]!;
    return [l.gso_max_segs, l.gso_max_size];
  };

  const stats = (host: string) => routeStats(topo, host, devs[host]![0]!);
  const all = async () => Object.fromEntries(await Promise.all(OVERLAY_HOSTS.map(async (h) => [h, await stats(h)] as const)));
  /** the super-packets A's dispatcher cut at tc-egress of its device towards B (the plain route's) */
  const cutAtA = () => {
    const m = BpfMap.fromPin(join(devicePins(topo, 'a', topo.dev('a', 'b')), 'tc-egress', 'itm_percpu'));
    try {
      return itmAbi.sumDstats(m);
    } finally {
      m.close();
    }
  };
  const allAlive = (v: OverlayView) => v.destinations.every((d) => d.paths.length > 0 && d.paths.some((p) => p.alive && p.answered > 0));
  /** route at tc-egress of A's device towards B, as itmctl list shows it */
  const egressAtA = async () => {
    const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', topo.dev('a', 'b')]);
    return d!.hooks.find((h) => h.hook === 'tc-egress')!.modules.find((x) => x.name === 'route')!;
  };

  before(async () => {
    topo = await Topology.create(overlayDecl({ gateway: true }));
    cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
    await plainRoutes(topo);
    // a forwarding box as on real hardware: C's frames cross the wire one MTU each (a veth would
    // carry its TSO super-packets across whole), and A's GRO, on as on NICs, makes super-packets
    // of them again, which A forwards to its tc-egress
    await topo.exec('c', ['ethtool', '-K', topo.dev('c', 'a'), 'tso', 'off', 'gso', 'off']);
    await topo.exec('a', ['ethtool', '-K', topo.dev('a', 'c'), 'gro', 'on']);
    dir = mkdtempSync(join(tmpdir(), 'itm-route-gw-'));
    for (const host of OVERLAY_HOSTS) devs[host] = topo.devs(host).map((d) => d.dev);
    gsoBefore = await gsoOf('a', topo.dev('a', 'b'));
    await loadOverlay(topo, dir, { gateway: true, probe: '{ interval_ms: 100, timeout_ms: 300, dead_after: 3 }' });
    await pathsWhenOn(topo, 'a', allAlive);
    await pathsWhenOn(topo, 'b', allAlive);
  });
  after(async () => {
    await topo?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** C → S through the overlay; every tunnel packet N1 sends B on the way, as captured */
  async function transfer(
    bytes: number,
    dport: number,
  ): Promise<{
    before: Record<string, RouteCounters>;
    after: Record<string, RouteCounters>;
    tunnel: ParsedPacket[];
    plain: ParsedPacket[];
    cut: bigint;
    largestAtS: number;
  }> {
    const before = await all();
    const cut0 = cutAtA().segmented;
    // snaplen: the outer headers and the overlay header, up to its sequence number and tag
    const onN1B = await capture(topo, 'b', {
      dev: topo.dev('b', 'n1'),
      filter: `udp dst port ${PORT} and udp[9] = 1`,
      snaplen: 80,
      direction: 'in',
    });
    const onN2B = await capture(topo, 'b', {
      dev: topo.dev('b', 'n2'),
      filter: `udp dst port ${PORT} and udp[9] = 1`,
      snaplen: 80,
      direction: 'in',
    });
    const onAB = await capture(topo, 'b', { dev: topo.dev('b', 'a'), filter: 'tcp', snaplen: 80 });
    const atS = await capture(topo, 's', { dev: topo.dev('s', 'b'), filter: `tcp dst port ${dport}`, snaplen: 80, direction: 'in' });
    try {
      await tcpTransfer(topo, { from: 'c', to: 's', family: 4, dport, bytes });
    } finally {
      for (const c of [onN1B, onN2B, onAB, atS]) await c.stop(300);
    }
    const tunnel = [...(await onN1B.stop()), ...(await onN2B.stop())];
    for (const c of [onN1B, onN2B]) assert.equal(c.stats?.droppedByKernel, 0, 'the capture kept every packet');
    const largestAtS = Math.max(...(await atS.stop()).map((p) => p.payloadLen ?? 0));
    return { before, after: await all(), tunnel, plain: await onAB.stop(), cut: cutAtA().segmented - cut0, largestAtS };
  }

  /** what a transfer through the overlay must show: every segment a tunnel packet of its own, with
   * its own sequence number, and nothing refused or dropped for its size */
  function assertThrough(r: Awaited<ReturnType<typeof transfer>>, what: string): void {
    const grew = (h: string, k: keyof RouteCounters) => r.after[h]![k] - r.before[h]![k];
    assert.ok(r.cut > 0n, `${what}: A's tc-egress got super-packets and cut them (${r.cut})`);
    assert.equal(grew('a', 'gso'), 0, `${what}: no super-packet dropped`);
    assert.ok(grew('a', 'encapsulated') > 1000, `${what}: A encapsulated the segments (${grew('a', 'encapsulated')})`);
    assert.ok(grew('b', 'decapsulated') > 1000, `${what}: B decapsulated them`);
    for (const h of OVERLAY_HOSTS) {
      const bad = grew(h, 'bad_tag') + grew(h, 'replayed') + grew(h, 'not_peer') + grew(h, 'errors') + grew(h, 'too_big') + grew(h, 'gso');
      assert.equal(bad, 0, `${what}: ${h} refused nothing: ${JSON.stringify(r.after[h])}`);
    }
    assert.equal(r.plain.length, 0, `${what}: the A — B link carries none of it unencapsulated`);
    const fromA = r.tunnel.filter((p) => p.payload && p.payload.readUInt32BE(8) === wireId('a'));
    assert.ok(fromA.length > 1000, `${what}: tunnel packets on the way to B (${fromA.length})`);
    assert.ok(
      fromA.every((p) => p.origLen <= 1514),
      `${what}: none larger than the underlay's MTU (${Math.max(...fromA.map((p) => p.origLen))})`,
    );
    const seqs = new Set(fromA.map((p) => `${p.payload!.readUInt32BE(4)}/${p.payload!.readBigUInt64BE(16)}`));
    assert.equal(seqs.size, fromA.length, `${what}: each with a sequence number of its own`);
  }

  test("the kernel data path: C's TCP to S, after GRO at A, reaches S with the same bytes, every segment a tunnel packet", async () => {
    const r = await transfer(4_000_000, 5301);
    assertThrough(r, 'kernel');
    assert.ok(r.after.a!.mss_clamped - r.before.a!.mss_clamped >= 1, "C's SYN had its MSS clamped at A");
    // B decapsulates each segment, and hands them to its stack through the GRO path: merged
    assert.ok(r.largestAtS > 1500, `S got segments merged again after the decapsulation (the largest ${r.largestAtS} bytes of payload)`);
  });

  test("a replayed, altered or stranger's segment of such a transfer is dropped and counted", async () => {
    const cap = await capture(topo, 'b', {
      dev: topo.dev('b', 'n1'),
      filter: `udp dst port ${PORT} and udp[9] = 1 and greater 1000`,
      snaplen: 1600,
      count: 5,
      direction: 'in',
    });
    await tcpTransfer(topo, { from: 'c', to: 's', family: 4, dport: 5302, bytes: 200_000 });
    const [orig] = await cap.wait(5000);
    assert.ok(orig, 'a data segment on N1 — B');
    const before = await stats('b');
    const frame = Buffer.from(orig.raw!);
    const hdr = 14 + 20 + 8;
    const altered = Buffer.from(frame);
    altered[frame.length - 1]! ^= 0x55; // a byte of the inner segment's payload
    const stranger = buildPacket({
      family: 4,
      src: '10.31.3.9',
      dst: '10.31.3.2',
      proto: 'udp',
      sport: 40000,
      dport: PORT,
      payload: frame.subarray(hdr),
      srcMac: orig.srcMac,
      dstMac: orig.dstMac,
    });
    await sendFrames(topo, 'n1', topo.dev('n1', 'b'), [frame, altered, stranger], { gapMs: 20 });
    await sleep(300);
    const s = await stats('b');
    assert.equal(s.replayed - before.replayed, 1, 'the replay');
    assert.equal(s.bad_tag - before.bad_tag, 1, 'the altered segment');
    assert.equal(s.not_peer - before.not_peer, 1, 'the stranger');
    assert.equal(s.decapsulated - before.decapsulated, 0, 'none was decapsulated');
  });

  test("A's own TCP to an address outside the overlay, out of the same device, is not cut, and the device's GSO settings are untouched", async () => {
    const dev = topo.dev('a', 'b');
    assert.deepEqual(await gsoOf('a', dev), gsoBefore, 'gso_max_segs and gso_max_size as before route was loaded');
    const cut0 = cutAtA().segmented;
    const before = await stats('a');
    // B's underlay address is no destination of the overlay: the plain route, with its GSO
    await tcpTransfer(topo, { from: 'a', to: 'b', family: 4, dport: 5303, bytes: 20_000_000, srcAddr: '10.31.5.1', dstAddr: '10.31.5.2' });
    assert.equal(cutAtA().segmented - cut0, 0n, 'none of its super-packets went through the segmentation pair');
    assert.equal((await stats('a')).encapsulated - before.encapsulated, 0, 'nor into the tunnel');
  });

  test("--datapath user on every node: the same transfer, with C's own TSO super-packets carried whole across the veth, gives the same bytes", async () => {
    for (const host of OVERLAY_HOSTS) {
      for (const dev of devs[host]!) await itmctl(topo, host, ['unload', 'route', '--dev', dev]);
      for (const dev of devs[host]!)
        await itmctl(topo, host, ['load', 'route', '--dev', dev, '--topology', join(dir, `${host}.yaml`), '--datapath', 'user']);
    }
    await pathsWhenOn(topo, 'a', allAlive);
    await pathsWhenOn(topo, 'b', allAlive);
    // C's TSO on again: its super-packets cross to A whole, as a veth carries them
    await topo.exec('c', ['ethtool', '-K', topo.dev('c', 'a'), 'tso', 'on', 'gso', 'on']);
    try {
      const r = await transfer(2_000_000, 5304);
      assertThrough(r, 'user');
      const m = await egressAtA();
      assert.equal(m.kind, 'user');
      assert.deepEqual(m.user!.bypassed, { down: 0, behind: 0, size: 0 }, 'no segment went past the user data path');
    } finally {
      await topo.exec('c', ['ethtool', '-K', topo.dev('c', 'a'), 'tso', 'off', 'gso', 'off']);
    }
  });

  test("--datapath user fails closed: while A's host that encapsulates is killed and restarted, what it cannot take is dropped, never sent out unencapsulated", async () => {
    const st = await itmctlJson<AgentStatus>(topo, 'a', ['agent', 'status']);
    const host = st.hosts.find((h) => h.name === 'route' && h.dev === topo.dev('a', 'b') && h.hook === 'tc-egress');
    assert.ok(host?.pid, `the agent reports the host's PID (${JSON.stringify(st.hosts)})`);
    const before = await egressAtA();
    const onAB = await capture(topo, 'b', { dev: topo.dev('b', 'a'), filter: 'udp dst port 6300', snaplen: 80 });
    const flow = await startUdpFlow(topo, { from: 'c', to: 's', family: 4, dport: 6300, ratePps: 1000, durationMs: 3000 });
    let r;
    try {
      await sleep(500);
      process.kill(host.pid, 'SIGKILL');
      await flow.done;
    } finally {
      r = await flow.stop();
      await onAB.stop(200);
    }
    assert.equal((await onAB.stop()).length, 0, 'none left A unencapsulated by the plain A — B link');
    const m = await egressAtA();
    assert.equal(m.user!.failClosed, true);
    const down = m.user!.bypassed.down - before.user!.bypassed.down;
    assert.ok(down > 0, `packets came while the host was down (${JSON.stringify(m.user)})`);
    assert.ok(m.counters.dropped - before.counters.dropped >= down, 'and were dropped');
    assert.ok(r.received > 1000 && r.received < r.sent, `the rest went through the overlay (${r.received} of ${r.sent})`);
    const again = await itmctlJson<AgentStatus>(topo, 'a', ['agent', 'status']);
    const h2 = again.hosts.find((h) => h.name === 'route' && h.dev === topo.dev('a', 'b') && h.hook === 'tc-egress')!;
    assert.ok(h2.restarts >= 1 && h2.pid !== host.pid, `restarted (${JSON.stringify(h2)})`);
  });
});
