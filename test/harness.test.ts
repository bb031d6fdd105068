// Tests of the test harness itself: the packet builder/parser against tcpdump and the kernel, and
// a three-host namespace topology carrying real UDP and TCP traffic through a forwarding host.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  ExecError,
  IPPROTO,
  TCP_FLAGS,
  Topology,
  buildArp,
  buildFragments,
  buildPacket,
  canonicalIp,
  capture,
  decodeFlowPayload,
  describePacket,
  formatIp,
  ipToBuffer,
  namespaceSkipReason,
  netCounters,
  parsePacket,
  parsePcap,
  sendFrames,
  startUdpFlow,
  tcpTransfer,
  udpFlow,
  verifyL4Checksum,
  withTopology,
  writePcap,
  type PacketSpec,
  type ParsedPacket,
  type TopologyDecl,
} from './harness/index.js';
import { clientItmServer } from './itm.js';

// offloads off: this suite checks the packet builder and parser against what the kernel puts on
// the wire, byte for byte, which needs checksums complete on the wire (with offloads on, a veth
// carries the sender's partial checksum as it is)
const DECL = { ...clientItmServer(), offloads: 'off' as const };

/** Alive and not a zombie (an orphan waits for init to reap it). */
const pidAlive = (pid: number) => {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
};
const listNamespaces = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout;
const hasTcpdump = spawnSync('tcpdump', ['--version']).status === 0;

/** Build `spec`, parse it back, and check that every field survived and the checksums verify. */
function roundTrip(spec: PacketSpec): ParsedPacket {
  const frame = buildPacket(spec);
  const p = parsePacket(frame);
  const what = describePacket(p);
  assert.equal(p.malformed, undefined, what);
  assert.equal(p.truncated, false, what);
  assert.equal(p.family, spec.family);
  assert.equal(p.src, canonicalIp(spec.src));
  assert.equal(p.dst, canonicalIp(spec.dst));
  const proto =
    spec.proto === 'udp'
      ? IPPROTO.UDP
      : spec.proto === 'tcp'
        ? IPPROTO.TCP
        : spec.proto === 'icmp'
          ? spec.family === 4
            ? IPPROTO.ICMP
            : IPPROTO.ICMPV6
          : spec.proto;
  assert.equal(p.proto, proto);
  const tos = spec.tos ?? spec.tclass ?? ((spec.dscp ?? 0) << 2) | (spec.ecn ?? 0);
  assert.equal(p.tos, tos);
  assert.equal(p.dscp, tos >> 2);
  assert.equal(p.ecn, tos & 3);
  assert.equal(p.ttl, spec.ttl ?? spec.hopLimit ?? 64);
  if (spec.family === 4) {
    assert.equal(p.ipChecksumOk, true, what);
    assert.equal(p.ipId, spec.id ?? 0);
    assert.equal(p.df, spec.df ?? false);
    if (spec.ipOptions) assert.deepEqual(p.ipOptions?.subarray(0, spec.ipOptions.length), spec.ipOptions);
  } else {
    assert.equal(p.ipChecksumOk, undefined);
    assert.equal(p.flowLabel, spec.flowLabel ?? 0);
    assert.deepEqual(
      p.extHeaders?.map((e) => e.type),
      [...(spec.ipv6ExtHeaders ?? []).map((e) => e.type), ...(spec.fragment ? ['frag'] : [])],
    );
  }
  if (spec.vlan !== undefined)
    assert.equal(p.vlan?.id, typeof spec.vlan === 'number' ? spec.vlan : Array.isArray(spec.vlan) ? spec.vlan[0]?.id : spec.vlan.id);
  if (spec.proto === 'udp' || spec.proto === 'tcp') {
    assert.equal(p.sport, spec.sport);
    assert.equal(p.dport, spec.dport);
  }
  if (spec.tcp) {
    assert.equal(p.tcp?.seq, spec.tcp.seq ?? 0);
    assert.equal(p.tcp?.ack, spec.tcp.ack ?? 0);
    assert.equal(p.tcp?.window, spec.tcp.window ?? 64240);
    if (spec.tcp.options) assert.deepEqual(p.tcp?.options.subarray(0, spec.tcp.options.length), spec.tcp.options);
  }
  if (spec.icmp) {
    assert.equal(p.icmp?.type, spec.icmp.type ?? (spec.family === 4 ? 8 : 128));
    assert.equal(p.icmp?.code, spec.icmp.code ?? 0);
  }
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload) : (spec.payload ?? Buffer.alloc(0));
  assert.equal(p.payloadLen, payload.length);
  assert.deepEqual(p.payload, payload);
  assert.equal(p.l4ChecksumOk, typeof spec.proto === 'number' && ![1, 6, 17, 58].includes(spec.proto) ? undefined : true, what);
  return p;
}

const V4 = { family: 4 as const, src: '192.0.2.1', dst: '198.51.100.7' };
const V6 = { family: 6 as const, src: '2001:db8::1', dst: '2001:db8:0:1::42' };

const ROUND_TRIP_CASES: Array<[string, PacketSpec]> = [
  [
    'IPv4 UDP with DSCP, ECN, DF and an odd-length payload',
    { ...V4, proto: 'udp', sport: 40000, dport: 53, dscp: 46, ecn: 2, df: true, id: 0xbeef, ttl: 17, payload: 'odd' },
  ],
  [
    'IPv4 TCP SYN with options, IP options and a VLAN tag',
    {
      ...V4,
      proto: 'tcp',
      sport: 1,
      dport: 443,
      vlan: { id: 42, pcp: 5 },
      ipOptions: Buffer.from([0x94, 0x04, 0, 0, 0x01]),
      tcp: { seq: 0xfffffff0, ack: 7, flags: 'S', window: 1000, options: Buffer.from([2, 4, 5, 0xb4, 1, 3, 3, 7]) },
    },
  ],
  ['IPv4 ICMP echo', { ...V4, proto: 'icmp', icmp: { id: 99, seq: 3 }, payload: Buffer.alloc(56, 0xab) }],
  ['IPv4 with an unknown protocol', { ...V4, proto: 132, payload: Buffer.from('sctp-ish') }],
  [
    'IPv6 UDP with traffic class and flow label',
    { ...V6, proto: 'udp', sport: 5353, dport: 5353, tclass: 0xb9, flowLabel: 0xabcde, hopLimit: 3, payload: 'x'.repeat(1000) },
  ],
  [
    'IPv6 TCP behind hop-by-hop and destination options, in QinQ',
    {
      ...V6,
      proto: 'tcp',
      sport: 80,
      dport: 1024,
      vlan: [{ id: 100 }, { id: 200 }],
      ipv6ExtHeaders: [{ type: 'hop', options: Buffer.from([5, 2, 0, 0]) }, { type: 'dst' }],
      tcp: { flags: TCP_FLAGS.PSH | TCP_FLAGS.ACK, seq: 1, ack: 2 },
      payload: 'GET /',
    },
  ],
  [
    'IPv6 UDP with a routing header (checksum against the final destination)',
    {
      ...V6,
      proto: 'udp',
      sport: 1,
      dport: 2,
      ipv6ExtHeaders: [{ type: 'routing', routingType: 0, segmentsLeft: 1, addresses: ['2001:db8::99'] }],
      payload: 'via',
    },
  ],
  [
    'IPv6 UDP with a segment routing header',
    {
      ...V6,
      proto: 'udp',
      sport: 1,
      dport: 2,
      ipv6ExtHeaders: [{ type: 'routing', routingType: 4, segmentsLeft: 1, addresses: ['2001:db8::77', V6.dst] }],
      payload: 'srh',
    },
  ],
  ['ICMPv6 echo', { ...V6, proto: 'icmp', icmp: { type: 128, id: 1, seq: 1 }, payload: 'ping' }],
  ['IPv6 atomic fragment', { ...V6, proto: 'udp', sport: 9, dport: 9, fragment: { offset: 0, more: false, id: 77 }, payload: 'whole' }],
];

describe('packet builder and parser', () => {
  for (const [name, spec] of ROUND_TRIP_CASES)
    it(`round-trips ${name}`, () => {
      roundTrip(spec);
    });

  it("parses the routing header's final destination and the atomic fragment", () => {
    assert.equal(roundTrip(ROUND_TRIP_CASES[6]![1]).finalDst, '2001:db8::99');
    assert.deepEqual(roundTrip(ROUND_TRIP_CASES[9]![1]).fragment, { offset: 0, more: false, id: 77 });
  });

  it("cuts datagrams into fragments whose pieces carry the whole datagram's checksum", () => {
    for (const base of [V4, V6]) {
      const payload = Buffer.from(Array.from({ length: 301 }, (_, i) => i & 0xff));
      const frames = buildFragments({ ...base, proto: 'udp', sport: 7, dport: 8, payload }, 100, 0x4242);
      const parts = frames.map((f) => parsePacket(f));
      assert.equal(parts.length, 4);
      parts.forEach((p, i) => {
        assert.equal(p.malformed, undefined);
        assert.deepEqual(p.fragment, { offset: i * 96, more: i < 3, id: 0x4242 });
        assert.equal(p.l4ChecksumOk, undefined, 'a fragment alone cannot be verified');
        if (base.family === 4) assert.equal(p.ipChecksumOk, true);
      });
      assert.equal(parts[0]!.sport, 7);
      assert.equal(parts[1]!.sport, undefined);
      const l4 = Buffer.concat(parts.map((p) => p.raw.subarray(p.l4Offset!)));
      assert.equal(l4.length, 8 + payload.length);
      assert.deepEqual(l4.subarray(8), payload);
      assert.ok(verifyL4Checksum(base.family, base.src, base.dst, IPPROTO.UDP, l4), 'reassembled datagram checksum');
    }
  });

  it('builds ARP requests and replies', () => {
    const req = parsePacket(buildArp({ senderMac: '02:aa:00:00:00:01', senderIp: '10.0.0.1', targetIp: '10.0.0.2' }));
    assert.equal(req.dstMac, 'ff:ff:ff:ff:ff:ff');
    assert.deepEqual(req.arp, {
      op: 1,
      senderMac: '02:aa:00:00:00:01',
      senderIp: '10.0.0.1',
      targetMac: '00:00:00:00:00:00',
      targetIp: '10.0.0.2',
    });
    const rep = parsePacket(
      buildArp({
        op: 'reply',
        senderMac: '02:aa:00:00:00:02',
        senderIp: '10.0.0.2',
        targetMac: '02:aa:00:00:00:01',
        targetIp: '10.0.0.1',
        vlan: 5,
      }),
    );
    assert.equal(rep.dstMac, '02:aa:00:00:00:01');
    assert.equal(rep.vlan?.id, 5);
    assert.equal(rep.arp?.op, 2);
  });

  it('flags corrupted packets: payload, IPv4 header, forced checksum values', () => {
    for (const spec of [
      ROUND_TRIP_CASES[0]![1],
      ROUND_TRIP_CASES[1]![1],
      ROUND_TRIP_CASES[2]![1],
      ROUND_TRIP_CASES[4]![1],
      ROUND_TRIP_CASES[8]![1],
    ]) {
      const frame = buildPacket(spec);
      const bad = Buffer.from(frame);
      bad[bad.length - 1]! ^= 0x01;
      const p = parsePacket(bad);
      assert.equal(p.l4ChecksumOk, false, describePacket(p));
      if (spec.family === 4) assert.equal(p.ipChecksumOk, true);
    }
    const v4 = buildPacket(ROUND_TRIP_CASES[0]![1]);
    const ttlOff = 14 + 8;
    v4[ttlOff]! -= 1; // a TTL decrement without the checksum update a router does
    assert.equal(parsePacket(v4).ipChecksumOk, false);
    assert.equal(parsePacket(buildPacket({ ...V4, proto: 'tcp', l4Checksum: 0x1234 })).l4ChecksumOk, false);
    assert.equal(parsePacket(buildPacket({ ...V4, proto: 'udp', ipChecksum: 0 })).ipChecksumOk, false);
    // UDP over IPv4 may carry no checksum at all; over IPv6 it may not.
    assert.equal(parsePacket(buildPacket({ ...V4, proto: 'udp', l4Checksum: 0 })).l4ChecksumOk, true);
    assert.equal(parsePacket(buildPacket({ ...V6, proto: 'udp', l4Checksum: 0 })).l4ChecksumOk, false);
  });

  it('leaves the L4 checksum undecided for a packet cut by the snap length, and never throws on garbage', () => {
    const frame = buildPacket({ ...V4, proto: 'udp', sport: 1, dport: 2, payload: Buffer.alloc(500) });
    const [p] = parsePcap(writePcap([{ data: frame.subarray(0, 100), origLen: frame.length }]));
    assert.equal(p!.truncated, true);
    assert.equal(p!.origLen, frame.length);
    assert.equal(p!.ipChecksumOk, true);
    assert.equal(p!.l4ChecksumOk, undefined);
    assert.equal(p!.payloadLen, 500);
    for (let n = 0; n < frame.length; n += 7) parsePacket(frame.subarray(0, n));
    for (let i = 0; i < 200; i++) parsePacket(Buffer.from(Array.from({ length: 80 }, () => (Math.random() * 256) | 0)));
  });

  it('formats and parses addresses canonically', () => {
    assert.equal(canonicalIp('2001:0DB8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
    assert.equal(canonicalIp('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(canonicalIp('::'), '::');
    assert.equal(canonicalIp('::ffff:192.0.2.1'), '::ffff:192.0.2.1');
    assert.equal(canonicalIp('fd01:0:0:0:0:0:0:0'), 'fd01::');
    assert.equal(formatIp(ipToBuffer('10.1.2.3'), 0, 4), '10.1.2.3');
    assert.throws(() => ipToBuffer('1::2::3'));
  });

  it('agrees with tcpdump about every checksum it builds', { skip: hasTcpdump ? false : 'no tcpdump' }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'itmt-pcap-'));
    try {
      const file = join(dir, 'built.pcap');
      await writeFile(file, writePcap(ROUND_TRIP_CASES.map(([, spec]) => buildPacket(spec))));
      const r = spawnSync('tcpdump', ['-r', file, '-n', '-vvv'], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stdout, /bad|incorrect|wrong/i, r.stdout);
      // tcpdump says "sum ok"/"(correct)" for the UDP, TCP and ICMPv6 ones it checks.
      assert.ok((r.stdout.match(/sum ok|\(correct\)/g) ?? []).length >= 7, r.stdout);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('namespace topology with real traffic', { skip: namespaceSkipReason() }, () => {
  let topo: Topology;
  let udpCapture: ParsedPacket[] = [];

  before(async () => {
    topo = await Topology.create(DECL);
  });
  after(async () => {
    await topo?.destroy();
  });

  it('creates the namespaces, interfaces, addresses and sysctls declared', async () => {
    assert.deepEqual(
      topo.namespaces,
      DECL.hosts.map((h) => topo.ns(h)),
    );
    for (const ns of topo.namespaces) assert.match(ns, new RegExp(`^itmt-${process.pid}-`));
    assert.equal(topo.dev('itm', 'server'), 'eth-server');
    assert.equal(topo.dev('server', 'itm'), 'eth-itm');
    assert.equal(topo.addr('server', 4), '10.2.0.2');
    assert.equal(topo.addr('server', 6), 'fd02::2');
    assert.equal(topo.addr('itm', 4, 'server'), '10.2.0.1');
    const inodes = new Set<number>();
    for (const h of topo.hosts) {
      const ino = topo.netnsInode(h);
      inodes.add(ino);
      const link = await topo.exec(h, ['readlink', '/proc/self/ns/net']);
      assert.equal(link.stdout.trim(), `net:[${ino}]`);
    }
    assert.equal(inodes.size, 3);
    const fwd = await topo.exec('itm', ['sysctl', '-n', 'net.ipv4.ip_forward', 'net.ipv6.conf.all.forwarding']);
    assert.deepEqual(fwd.stdout.trim().split(/\s+/), ['1', '1']);
    const feat = await topo.exec('client', ['ethtool', '-k', topo.dev('client', 'itm')]);
    assert.match(feat.stdout, /^tx-checksumming: off/m);
    assert.match(feat.stdout, /^tcp-segmentation-offload: off/m);
    const links = JSON.parse((await topo.exec('itm', ['ip', '-j', 'link', 'show', topo.dev('itm', 'client')])).stdout) as Array<{
      ifindex: number;
      address: string;
    }>;
    assert.equal(links[0]?.ifindex, topo.ifindex('itm', topo.dev('itm', 'client')));
    assert.equal(links[0]?.address, topo.mac('itm', topo.dev('itm', 'client')));
    const failed = await topo.exec('itm', ['sh', '-c', 'echo oops >&2; exit 3'], { check: false });
    assert.deepEqual([failed.code, failed.stderr.trim()], [3, 'oops']);
    await assert.rejects(topo.exec('itm', ['false']), ExecError);
  });

  it('carries 200-packet UDP flows over IPv4 and IPv6 through the forwarding host, whole and with valid checksums on the wire', async () => {
    const cap = await capture(topo, 'server', { dev: topo.dev('server', 'itm'), filter: 'udp and (dst port 5001 or dst port 5002)' });
    const [r4, r6] = await Promise.all([
      udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 200, ratePps: 200, payloadSize: 100 }),
      udpFlow(topo, { from: 'client', to: 'server', family: 6, dport: 5002, count: 200, ratePps: 200, payloadSize: 100 }),
    ]);
    const packets = await cap.stop();
    for (const r of [r4, r6]) {
      assert.deepEqual(
        { sent: r.sent, received: r.received, missing: r.missing, duplicates: r.duplicates },
        { sent: 200, received: 200, missing: [], duplicates: 0 },
      );
      assert.ok(r.ms > 900 && r.ms < 3000, `200 packets at 200 pps took ${r.ms} ms`);
    }
    assert.equal(packets.length, 400, `captured ${packets.length} (${JSON.stringify(cap.stats)})`);
    for (const [family, dport] of [
      [4, 5001],
      [6, 5002],
    ] as const) {
      const mine = packets.filter((p) => p.family === family && p.dport === dport);
      assert.equal(mine.length, 200);
      assert.deepEqual(
        mine.map((p) => decodeFlowPayload(p.payload)?.seq),
        Array.from({ length: 200 }, (_, i) => i),
      );
      for (const p of mine) {
        const what = describePacket(p);
        assert.equal(p.src, topo.addr('client', family), what);
        assert.equal(p.dst, topo.addr('server', family), what);
        assert.equal(p.proto, IPPROTO.UDP, what);
        assert.equal(p.dscp, 0, what);
        assert.equal(p.ttl, 63, `forwarded once: ${what}`);
        assert.equal(p.payloadLen, 100, what);
        assert.equal(p.l4ChecksumOk, true, what);
        assert.equal(p.ipChecksumOk, family === 4 ? true : undefined, what);
      }
    }
    udpCapture = packets;
  });

  it('rebuilds a packet the kernel sent byte for byte', () => {
    for (const family of [4, 6] as const) {
      const p = udpCapture.find((x) => x.family === family);
      assert.ok(p, 'needs the UDP capture of the previous test');
      const rebuilt = buildPacket({
        srcMac: p.srcMac,
        dstMac: p.dstMac,
        family,
        src: p.src!,
        dst: p.dst!,
        proto: 'udp',
        sport: p.sport,
        dport: p.dport,
        tos: p.tos,
        ttl: p.ttl,
        id: p.ipId,
        df: p.df,
        flowLabel: p.flowLabel,
        payload: p.payload,
      });
      assert.deepEqual(rebuilt, p.raw);
    }
  });

  it('completes a 1 MB TCP transfer over IPv4 and IPv6', async () => {
    for (const family of [4, 6] as const) {
      const r = await tcpTransfer(topo, { from: 'client', to: 'server', family, dport: 6000 + family, bytes: 1 << 20 });
      assert.equal(r.bytes, 1 << 20);
      assert.ok(r.ms > 0 && r.ms < 10_000);
    }
  });

  it('runs an open-ended flow that can be watched and stopped', async () => {
    const f = await startUdpFlow(topo, { from: 'server', to: 'client', family: 6, dport: 5003, ratePps: 500 });
    await new Promise((r) => setTimeout(r, 300));
    const mid = await f.stats();
    assert.ok(mid.received > 50, `received ${mid.received} after 300 ms at 500 pps`);
    const r = await f.stop();
    assert.ok(r.sent >= mid.received);
    assert.equal(r.received, r.sent);
    assert.deepEqual(r.missing, []);
    assert.deepEqual(await f.stop(), r, 'stop() is idempotent');
  });

  it('puts built frames on the wire: the receiving kernel accepts good checksums and rejects corrupted ones', async () => {
    const cdev = topo.dev('client', 'itm');
    const base = {
      srcMac: topo.mac('client', cdev),
      dstMac: topo.mac('itm', topo.dev('itm', 'client')),
      proto: 'udp' as const,
      sport: 9999,
      dport: 9 /* closed */,
      payload: 'built by hand',
    };
    const frames: Buffer[] = [];
    for (const family of [4, 6] as const) {
      const spec: PacketSpec = { ...base, family, src: topo.addr('client', family), dst: topo.addr('server', family) };
      const good = buildPacket(spec);
      const bad = Buffer.from(good);
      bad[bad.length - 1]! ^= 0xff;
      frames.push(good, good, good, bad, bad);
    }
    const before = await netCounters(topo, 'server');
    const cap = await capture(topo, 'server', { dev: topo.dev('server', 'itm'), filter: 'udp port 9', count: 10 });
    assert.equal(await sendFrames(topo, 'client', cdev, frames), 10);
    const seen = await cap.wait(5000);
    assert.equal(seen.length, 10, 'all forwarded to the server');
    const afterward = await netCounters(topo, 'server');
    const delta = (k: string) => (afterward[k] ?? NaN) - (before[k] ?? NaN);
    assert.equal(delta('Udp.NoPorts'), 3);
    assert.equal(delta('Udp.InCsumErrors'), 2);
    assert.equal(delta('Udp6.NoPorts'), 3);
    assert.equal(delta('Udp6.InCsumErrors'), 2);
    assert.equal(seen.filter((p) => p.l4ChecksumOk === false).length, 4);
  });

  it('tears down: processes killed, clean-up steps run before the namespaces go, nothing left', async () => {
    const sleeper = topo.spawn('server', ['sleep', '300']);
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(sleeper.running);
    const order: string[] = [];
    topo.onDestroy(() => {
      order.push(`first ns-exists=${existsSync(`/run/netns/${topo.ns('itm')}`)}`);
    });
    topo.onDestroy(async () => {
      order.push('second');
    });
    const dir = topo.tmpdir;
    await topo.destroy();
    await topo.destroy();
    assert.deepEqual(order, ['second', 'first ns-exists=true']);
    assert.ok(!sleeper.running);
    assert.ok(!pidAlive(sleeper.pid));
    assert.ok(!existsSync(dir));
    const left = listNamespaces();
    for (const ns of topo.namespaces) assert.ok(!left.includes(ns), `${ns} left behind:\n${left}`);
    await assert.rejects(topo.exec('itm', ['true']), /destroyed/);
  });
});

describe('teardown when things go wrong', { skip: namespaceSkipReason() }, () => {
  const small: TopologyDecl = { hosts: ['a', 'b'], links: [{ a: 'a', b: 'b', addrs: { a: ['10.9.0.1/24'], b: ['10.9.0.2/24'] } }] };

  it('keeps offloads as the kernel sets them unless told otherwise', async () => {
    await withTopology(small, async (t) => {
      const feat = (await t.exec('a', ['ethtool', '-k', t.dev('a', 'b')])).stdout;
      assert.match(feat, /^tx-checksumming: on/m);
      assert.match(feat, /^tcp-segmentation-offload: on/m);
      assert.match(feat, /^generic-segmentation-offload: on/m);
    });
  });

  it('withTopology tears down when the callback throws', async () => {
    let names: string[] = [];
    await assert.rejects(
      withTopology(small, async (t) => {
        names = t.namespaces;
        throw new Error('test failed');
      }),
      /test failed/,
    );
    assert.equal(names.length, 2);
    const left = listNamespaces();
    for (const ns of names) assert.ok(!left.includes(ns), `${ns} left behind`);
  });

  it('a bad declaration leaves nothing behind', async () => {
    const before = listNamespaces();
    await assert.rejects(Topology.create({ ...small, routes: { a: ['default via 10.99.0.1'] } }), /Nexthop|unreachable|route/i);
    assert.equal(listNamespaces(), before);
    await assert.rejects(Topology.create({ hosts: ['a'], links: [{ a: 'a', b: 'zz' }] }), /unknown host zz/);
    await assert.rejects(
      Topology.create({ hosts: ['a', 'b'], links: [{ a: 'a', b: 'b', devs: { a: 'much-too-long-name' } }] }),
      /bad interface name/,
    );
  });

  for (const [how, script] of [
    ['SIGTERM', "process.kill(process.pid, 'SIGTERM'); setTimeout(() => {}, 10000);"],
    ['process.exit without destroy', 'process.exit(0);'],
  ] as const) {
    it(`a process that ends by ${how} removes its namespaces and children`, async () => {
      const harness = fileURLToPath(new URL('./harness/index.js', import.meta.url));
      const code = `
        import { Topology } from ${JSON.stringify(harness)};
        const t = await Topology.create(${JSON.stringify(small)});
        const p = t.spawn('b', ['sleep', '300']);
        await new Promise((r) => setTimeout(r, 50));
        console.log(JSON.stringify({ ns: t.namespaces, pid: p.pid }));
        ${script}`;
      const child = spawn(process.execPath, ['--input-type=module', '-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (s: string) => {
        out += s;
      });
      const [exitCode, signal] = await new Promise<[number | null, string | null]>((r) => child.on('close', (c, s) => r([c, s])));
      const info = JSON.parse(out.trim().split('\n')[0] ?? '{}') as { ns: string[]; pid: number };
      assert.equal(info.ns.length, 2, `child output: ${out}`);
      assert.ok(how === 'SIGTERM' ? signal === 'SIGTERM' : exitCode === 0, `exit ${exitCode} ${signal}`);
      const left = listNamespaces();
      for (const ns of info.ns) assert.ok(!left.includes(ns), `${ns} left behind`);
      // The killed child is reaped by init, not by us: give it a moment.
      for (let i = 0; i < 100 && pidAlive(info.pid); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(!pidAlive(info.pid), 'child process still running');
    });
  }
});
