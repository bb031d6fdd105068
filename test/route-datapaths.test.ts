// route's two data paths against one table (as Katran tests its XDP and tc programs): for each
// input packet, the verdict, the counter and the output both must give. The kernel's runs through
// the pinned dispatcher of the node's hook by BPF_PROG_TEST_RUN; the TypeScript one is route's
// UserDatapath on the same node's maps, in this process. Tunnel packets are made with the
// TypeScript tag and checked by the kernel, and the kernel's are checked with the TypeScript tag.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BpfMap, BpfProgram } from '../src/libbpf/index.js';
import { decode, registerLayouts, sumPerCpu } from '../src/abi-codec.js';
import type { DeviceView } from '../src/registry/index.js';
import { PacketView } from '../src/user/packet.js';
import * as abi from '../modules/route/route.abi.js';
import { UserDatapath } from '../modules/route/datapath.js';
import { loadTopology, wireId } from '../modules/route/topology.js';
import { tagKey, type TagKey } from '../modules/route/tag.js';
import { FIELD, HDR_LEN, Type, readHeader, seal, tagOk } from '../modules/route/wire.js';
import { Topology, buildPacket, namespaceSkipReason, parsePacket, type PacketSpec } from './harness/index.js';
import { cleanItmOnDestroy, devicePins, itmctl, itmctlJson, modulePin } from './itm.js';
import { CLIENT, SERVER, loadOverlay, overlayDecl, overlayKey, plainRoutes, pathsWhen } from './overlay.js';

registerLayouts(abi.layouts);
const skip = namespaceSkipReason();
const PORT = 7946,
  OVERHEAD = abi.ROUTE_OVERHEAD;
type Node = 'a' | 'n1';
type Hook = 'tc-egress' | 'tc-ingress';
/** what became of the packet: sent on by the module (encapsulated, relayed; the kernel's
 * decapsulation too, into the GRO path), dropped, or left to go on along the chain */
type Outcome = 'sent' | 'drop' | 'on';
type Counter = keyof abi.RouteStats;

describe('route: one table, both data paths', { skip }, () => {
  let topo: Topology;
  let dir: string;
  const progs = new Map<string, BpfProgram>();
  const maps: BpfMap[] = [];
  const paths = new Map<Node, UserDatapath>();
  const openers = new Map<Node, (m: string) => BpfMap>();
  const key = { an1: tagKey(Buffer.from(overlayKey(1), 'hex')), n1b: tagKey(Buffer.from(overlayKey(3), 'hex')) };
  // fresh sequence numbers, above any the nodes' own traffic has raised a window slot to
  let seq = (BigInt(Date.now()) + 10n ** 9n) * 1_000_000n;

  before(async () => {
    topo = await Topology.create(overlayDecl());
    cleanItmOnDestroy(topo, 'a', 'n1', 'n2', 'b');
    await plainRoutes(topo);
    dir = mkdtempSync(join(tmpdir(), 'itm-route-dp-'));
    // through N1 alone: with N2 beside it the probes pick either (their links are alike), and the
    // rows below are about what each data path does with a packet, not about that choice
    await loadOverlay(topo, dir, { through: ['n1'] });
    await pathsWhen(topo, 'a', (v) => v.destinations.every((d) => d.paths.some((p) => p.alive)));
    // the control planes stop (the next hops they chose stay in the maps): no probe is counted
    // beside the table's packets
    for (const h of ['a', 'n1', 'b']) {
      await itmctl(topo, h, ['agent', 'stop']);
      for (let i = 0; i < 100 && !/no itmd runs/.test((await itmctl(topo, h, ['agent', 'status'])).stdout); i++)
        await new Promise((r) => setTimeout(r, 50));
    }
    for (const [node, dev] of [
      ['a', topo.dev('a', 'b')],
      ['n1', topo.dev('n1', 'a')],
    ] as Array<[Node, string]>) {
      for (const hook of ['tc-egress', 'tc-ingress'] as Hook[])
        progs.set(`${node}/${hook}`, BpfProgram.fromPin(join(devicePins(topo, node, dev), hook, 'dispatch')));
      const [d] = await itmctlJson<DeviceView[]>(topo, node, ['list', '--dev', dev]);
      const id = d!.hooks.find((h) => h.hook === 'tc-ingress')!.modules.find((m) => m.name === 'route')!.id;
      const opened = new Map<string, BpfMap>();
      const open = (m: string) => {
        let b = opened.get(m);
        if (!b) {
          b = BpfMap.fromPin(modulePin(topo, node, dev, 'tc-ingress', id, m));
          opened.set(m, b);
          maps.push(b);
        }
        return b;
      };
      openers.set(node, open);
      paths.set(node, new UserDatapath(loadTopology(join(dir, `${node}.yaml`)), open));
    }
  });
  after(async () => {
    for (const p of progs.values()) p.close();
    for (const m of maps) m.close();
    await topo?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A's device towards N1 and N1's towards A, as frames on that link carry them */
  const macs = () => ({ srcMac: topo.mac('n1', topo.dev('n1', 'a')), dstMac: topo.mac('a', topo.dev('a', 'n1')) });
  const inner = (o: Partial<PacketSpec> = {}) =>
    buildPacket({
      family: 4,
      src: SERVER,
      dst: CLIENT,
      proto: 'tcp',
      sport: 5201,
      dport: 40000,
      tcp: { flags: 'PA', seq: 7 },
      payload: Buffer.alloc(600, 0x5a),
      ...o,
    } as PacketSpec);
  /** a tunnel frame: `innerFrame`'s IP packet behind outer IPv4 + UDP + an overlay header sealed
   * under `k` */
  function tunnel(
    innerFrame: Buffer,
    h: { from: string; origin: string; to: string; keyId?: number; type?: number; seq?: bigint },
    k: TagKey,
    outer: { src: string; dst: string },
  ): Buffer {
    const ip = innerFrame.subarray(14);
    const pkt = Buffer.alloc(HDR_LEN + ip.length);
    ip.copy(pkt, HDR_LEN);
    const ihl = (ip[0]! & 0xf) * 4;
    const csum = ip[9] === 6 ? HDR_LEN + ihl + 16 : ip[9] === 17 ? HDR_LEN + ihl + 6 : undefined;
    seal(
      pkt,
      {
        type: (h.type ?? Type.Data) as never,
        flags: 0,
        keyId: h.keyId ?? 0,
        from: wireId(h.from),
        origin: wireId(h.origin),
        to: wireId(h.to),
        seq: h.seq ?? ++seq,
      },
      k,
      csum,
    );
    return buildPacket({ ...macs(), family: 4, src: outer.src, dst: outer.dst, proto: 'udp', sport: 49152, dport: PORT, payload: pkt });
  }

  /** the node's counters, the kernel's and the user data path's apart */
  const counters = (node: Node) => {
    const open = openers.get(node)!;
    const k = sumPerCpu<Record<string, bigint>>(abi.route_stats, open('route_stats'), Buffer.alloc(4));
    const u = decode<Record<string, bigint>>(abi.route_stats, open('route_ustats').lookup(Buffer.alloc(4))!);
    return { kernel: k, user: u };
  };

  function runKernel(node: Node, hook: Hook, frame: Buffer): { outcome: Outcome; out: Buffer } {
    const r = progs.get(`${node}/${hook}`)!.testRun({ data: frame, repeat: 1 });
    const ret = r.retval | 0;
    return { outcome: ret === 7 ? 'sent' : ret === 2 ? 'drop' : 'on', out: r.data };
  }

  function runUser(node: Node, hook: Hook, frame: Buffer): { outcome: Outcome; out: Buffer } {
    const room = Buffer.alloc(256 + frame.length);
    frame.copy(room, 256);
    const v = PacketView.parse(room.subarray(256), { buf: room, start: 0 }) as PacketView;
    v.noteChecksums();
    const verdict = paths.get(node)!.process(v, hook === 'tc-egress');
    if (verdict === 'drop') return { outcome: 'drop', out: v.data };
    v.finish();
    return { outcome: v.out ? 'sent' : 'on', out: Buffer.from(v.data) };
  }

  interface Row {
    what: string;
    node: Node;
    hook: Hook;
    /** a new frame for each run: sequence numbers are taken once */
    frame: () => Buffer;
    outcome: Outcome | { kernel: Outcome; user: Outcome };
    counter: Counter | Counter[];
    check?: (out: Buffer, input: Buffer) => void;
  }

  /** the outer headers and the overlay header of an output tunnel packet */
  function tunnelOut(out: Buffer) {
    const p = parsePacket(out);
    const pkt = out.subarray(14 + 28);
    return { p, pkt, h: readHeader(pkt)! };
  }
  const sameInner = (out: Buffer, input: Buffer, at: number) => {
    const got = parsePacket(Buffer.concat([input.subarray(0, 14), out.subarray(at)]));
    const want = parsePacket(input);
    assert.deepEqual(got.payload, want.payload, 'the inner payload, whole');
    assert.deepEqual([got.src, got.dst, got.sport, got.dport, got.dscp], [want.src, want.dst, want.sport, want.dport, want.dscp]);
  };

  const rows: Row[] = [
    {
      what: "egress: TCP to the overlay's destination: encapsulated for N1, tagged under A–N1's key",
      node: 'a',
      hook: 'tc-egress',
      outcome: 'sent',
      counter: 'encapsulated',
      frame: () =>
        buildPacket({
          family: 4,
          src: CLIENT,
          dst: SERVER,
          proto: 'tcp',
          sport: 40000,
          dport: 5201,
          dscp: 46,
          tcp: { flags: 'PA', seq: 9 },
          payload: Buffer.alloc(800, 0x33),
        }),
      check: (out, input) => {
        const { p, pkt, h } = tunnelOut(out);
        assert.deepEqual([p.src, p.dst, p.proto, p.dport], ['10.31.1.1', '10.31.1.2', 17, PORT], 'outer: A to N1, UDP to the overlay port');
        assert.equal(p.dscp, 46, 'the inner DSCP on the outer header');
        assert.equal(p.ipChecksumOk, true);
        assert.equal(out.length, input.length + OVERHEAD);
        assert.deepEqual(
          [h.type, h.from, h.origin, h.to, pkt[FIELD.version]],
          [Type.Data, wireId('a'), wireId('a'), wireId('b'), abi.ROUTE_VERSION],
        );
        assert.equal(tagOk(pkt, key.an1, HDR_LEN + 20 + 16), true, 'the tag, as TypeScript computes it');
        sameInner(out, input, 14 + OVERHEAD);
      },
    },
    {
      what: 'egress: a TCP SYN: its MSS lowered to what the tunnel leaves of the MTU, then encapsulated',
      node: 'a',
      hook: 'tc-egress',
      outcome: 'sent',
      counter: ['mss_clamped', 'encapsulated'],
      frame: () =>
        buildPacket({
          family: 4,
          src: CLIENT,
          dst: SERVER,
          proto: 'tcp',
          sport: 40001,
          dport: 5201,
          tcp: { flags: 'S', options: Buffer.from([2, 4, 0x05, 0xb4]) },
        }),
      check: (out) => {
        const q = parsePacket(Buffer.concat([out.subarray(0, 14), out.subarray(14 + OVERHEAD)]));
        assert.equal(q.tcp!.options.readUInt16BE(2), 1500 - OVERHEAD - 40, 'MSS 1400');
        assert.equal(q.l4ChecksumOk, true, 'the TCP checksum follows');
      },
    },
    {
      what: 'egress: UDP too big for the tunnel: dropped',
      node: 'a',
      hook: 'tc-egress',
      outcome: 'drop',
      counter: 'too_big',
      frame: () =>
        buildPacket({ family: 4, src: CLIENT, dst: SERVER, proto: 'udp', sport: 40002, dport: 5201, payload: Buffer.alloc(1460) }),
    },
    {
      what: 'ingress: a data packet for A from N1, tagged right: decapsulated',
      node: 'a',
      hook: 'tc-ingress',
      outcome: { kernel: 'sent', user: 'on' },
      counter: 'decapsulated',
      frame: () => tunnel(inner(), { from: 'n1', origin: 'b', to: 'a' }, key.an1, { src: '10.31.1.2', dst: '10.31.1.1' }),
      check: (out, input) => {
        assert.equal(out.length, input.length - OVERHEAD);
        assert.deepEqual(out.subarray(14), inner().subarray(14), 'the inner packet, byte for byte');
      },
    },
    {
      what: 'ingress: the same sequence number twice: the second is dropped as replayed',
      node: 'a',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'replayed',
      frame: () => tunnel(inner(), { from: 'n1', origin: 'b', to: 'a' }, key.an1, { src: '10.31.1.2', dst: '10.31.1.1' }),
    },
    {
      what: 'ingress: a byte of the inner payload altered: dropped for its tag',
      node: 'a',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'bad_tag',
      frame: () => {
        const f = tunnel(inner(), { from: 'n1', origin: 'b', to: 'a' }, key.an1, { src: '10.31.1.2', dst: '10.31.1.1' });
        f[f.length - 3]! ^= 0x40;
        return f;
      },
    },
    {
      what: "ingress: tagged under another pair's key: dropped for its tag",
      node: 'a',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'bad_tag',
      frame: () => tunnel(inner(), { from: 'n1', origin: 'b', to: 'a' }, key.n1b, { src: '10.31.1.2', dst: '10.31.1.1' }),
    },
    {
      what: 'ingress: from an address that is not the peer the header names: dropped',
      node: 'a',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'not_peer',
      frame: () => tunnel(inner(), { from: 'n1', origin: 'b', to: 'a' }, key.an1, { src: '10.31.1.9', dst: '10.31.1.1' }),
    },
    {
      what: 'ingress: a key id the pair does not have: dropped',
      node: 'a',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'bad_key',
      frame: () => tunnel(inner(), { from: 'n1', origin: 'b', to: 'a', keyId: 3 }, key.an1, { src: '10.31.1.2', dst: '10.31.1.1' }),
    },
    {
      what: 'ingress: another version of the header: dropped',
      node: 'a',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'bad_version',
      frame: () => {
        const f = tunnel(inner(), { from: 'n1', origin: 'b', to: 'a' }, key.an1, { src: '10.31.1.2', dst: '10.31.1.1' });
        f[14 + 28 + FIELD.version] = 1;
        return f;
      },
    },
    {
      what: 'ingress: shorter than the overlay header: dropped',
      node: 'a',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'truncated',
      frame: () =>
        buildPacket({
          ...macs(),
          family: 4,
          src: '10.31.1.2',
          dst: '10.31.1.1',
          proto: 'udp',
          sport: 49152,
          dport: PORT,
          payload: Buffer.alloc(20, 2),
        }),
    },
    {
      what: "ingress at the relay: a packet from A for B: checked, then sent on to B with N1's header and a tag under N1–B's key",
      node: 'n1',
      hook: 'tc-ingress',
      outcome: 'sent',
      counter: 'relayed',
      frame: () =>
        tunnel(inner({ src: CLIENT, dst: SERVER, sport: 40000, dport: 5201 }), { from: 'a', origin: 'a', to: 'b' }, key.an1, {
          src: '10.31.1.1',
          dst: '10.31.1.2',
        }),
      check: (out, input) => {
        const { p, pkt, h } = tunnelOut(out);
        assert.deepEqual([p.src, p.dst], ['10.31.3.1', '10.31.3.2'], 'outer: N1 to B');
        assert.deepEqual([h.from, h.origin, h.to], [wireId('n1'), wireId('a'), wireId('b')]);
        assert.notEqual(h.seq, readHeader(input.subarray(14 + 28))!.seq, "N1's own sequence number");
        assert.equal(tagOk(pkt, key.n1b, HDR_LEN + 20 + 16), true, "the tag under N1–B's key");
        assert.deepEqual(out.subarray(14 + OVERHEAD), input.subarray(14 + OVERHEAD), 'the inner packet as it came');
      },
    },
    {
      what: 'ingress at the relay: relayed once already (from is not its origin): dropped',
      node: 'n1',
      hook: 'tc-ingress',
      outcome: 'drop',
      counter: 'bad_hops',
      frame: () =>
        tunnel(inner({ src: CLIENT, dst: SERVER }), { from: 'a', origin: 'n2', to: 'b' }, key.an1, { src: '10.31.1.1', dst: '10.31.1.2' }),
    },
  ];

  // NH runs 16 bytes a step and a last 8, in its own BPF function: every residue of the inner
  // length mod 16, and the longest inner packet a tag covers, tagged by TypeScript and checked by the
  // kernel (an altered byte dropped), relayed with the kernel's tag checked by TypeScript
  test('the tag agrees at every inner length: 16 residues, and the longest', () => {
    const lengths = [
      ...Array.from({ length: 16 }, (_, i) => 40 + i),
      ...Array.from({ length: 16 }, (_, i) => 1384 + i),
      abi.ROUTE_MAX_INNER,
    ];
    for (const len of lengths) {
      const pad = len - 40;
      const body = (o: Partial<PacketSpec>) =>
        inner({ payload: Buffer.from(Array.from({ length: pad }, (_, i) => (i * 7 + len) & 0xff)), ...o });
      const mtu = (f: Buffer) => (f.length - 14 > 1500 ? undefined : f);
      const good = tunnel(body({}), { from: 'n1', origin: 'b', to: 'a' }, key.an1, { src: '10.31.1.2', dst: '10.31.1.1' });
      assert.equal(runKernel('a', 'tc-ingress', good).outcome, 'sent', `${len} bytes: decapsulated`);
      const bad = tunnel(body({}), { from: 'n1', origin: 'b', to: 'a' }, key.an1, { src: '10.31.1.2', dst: '10.31.1.1' });
      bad[bad.length - 1 - (len % 5)]! ^= 0x01;
      assert.equal(runKernel('a', 'tc-ingress', bad).outcome, 'drop', `${len} bytes, one bit altered: dropped`);
      const relay = mtu(
        tunnel(body({ src: CLIENT, dst: SERVER, sport: 40000, dport: 5201 }), { from: 'a', origin: 'a', to: 'b' }, key.an1, {
          src: '10.31.1.1',
          dst: '10.31.1.2',
        }),
      );
      if (!relay) continue; // the relay sends nothing over N1–B's MTU
      const r = runKernel('n1', 'tc-ingress', relay);
      assert.equal(r.outcome, 'sent', `${len} bytes: relayed`);
      assert.equal(tagOk(tunnelOut(r.out).pkt, key.n1b, HDR_LEN + 20 + 16), true, `${len} bytes: the relay's tag`);
    }
  });

  for (const row of rows) {
    test(row.what, () => {
      for (const path of ['kernel', 'user'] as const) {
        const input = row.frame();
        // the replay row: its number once through, then again
        if (row.counter === 'replayed') (path === 'kernel' ? runKernel : runUser)(row.node, row.hook, Buffer.from(input));
        const before = counters(row.node)[path];
        const r = (path === 'kernel' ? runKernel : runUser)(row.node, row.hook, Buffer.from(input));
        const after = counters(row.node)[path];
        const want = typeof row.outcome === 'string' ? row.outcome : row.outcome[path];
        assert.equal(r.outcome, want, `${path}: the verdict`);
        for (const c of [row.counter].flat()) assert.equal(after[c]! - before[c]!, 1n, `${path}: ${c} counted once`);
        const others = Object.keys(after).filter((c) => ![row.counter].flat().includes(c as Counter) && after[c] !== before[c]);
        assert.deepEqual(others, [], `${path}: nothing else counted`);
        if (r.outcome !== 'drop') row.check?.(r.out, input);
      }
    });
  }
});
