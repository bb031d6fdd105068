// The dispatcher on hand-made packets, through BPF_PROG_TEST_RUN: every packet passes unmodified
// or is modified correctly (DSCP set, ECN kept, checksums valid), and none is dropped by mistake.
// The dispatcher and modules are set up by itmctl on a device in a namespace of the test's own;
// the pinned programs are then run directly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import * as abi from '../src/abi.js';
import { BpfMap, BpfProgram } from '../src/libbpf/index.js';
import { Topology, buildArp, buildPacket, namespaceSkipReason, parsePacket, type PacketSpec } from './harness/index.js';
import { ITMCTL, cleanItmOnDestroy, devicePins } from './itm.js';

const skip = namespaceSkipReason();
const EF = 46;

/** The itm host with two peers, each on a veth of its own; itm's state goes with the topology. */
async function twoPeers(): Promise<Topology> {
  const topo = await Topology.create({
    hosts: ['itm', 'peer', 'peer2'],
    links: [
      { a: 'itm', b: 'peer' },
      { a: 'itm', b: 'peer2' },
    ],
  });
  cleanItmOnDestroy(topo, 'itm');
  return topo;
}

// Three builds of the parse: tc reading headers in place (the usual case), tc copying them out with
// bpf_skb_load_bytes (headers outside the linear part, forced here because test_run's packets are
// always linear), and the xdp dispatcher.
for (const variant of ['fast', 'slow', 'xdp'] as const)
  describe(`dispatcher (BPF_PROG_TEST_RUN, ${variant === 'xdp' ? 'xdp' : `tc, ${variant} parse`})`, { skip }, () => {
    // a packet goes on with TC_ACT_UNSPEC at tc, so that other filters on the hook still run
    const PASS = variant === 'xdp' ? 2 : -1;
    let topo: Topology;
    // `egress` marks everything EF; `ingress` marks only UDP to 10.0.0.0/8 port 5001 or 6000-6010,
    // AF41 (at xdp: the dispatchers of two devices)
    let egress: BpfProgram;
    let ingress: BpfProgram;
    let dstats: BpfMap;

    before(async () => {
      topo = await twoPeers();
      const dev = topo.dev('itm', 'peer');
      const dev2 = variant === 'xdp' ? topo.dev('itm', 'peer2') : dev;
      const [hookAll, hookSome] = variant === 'xdp' ? ['xdp', 'xdp'] : ['tc-egress', 'tc-ingress'];
      const env = variant === 'slow' ? ['env', 'ITM_FORCE_SLOW_PARSE=1'] : [];
      await topo.exec('itm', [...env, process.execPath, ITMCTL, 'load', 'mark', '--dev', dev, '--hook', hookAll, '--dscp', 'ef']);
      await topo.exec('itm', [
        ...env,
        process.execPath,
        ITMCTL,
        'load',
        'mark',
        '--dev',
        dev2,
        '--hook',
        hookSome,
        '--dscp',
        'af41',
        '--interest',
        'proto=udp,dst=10.0.0.0/8,dst=fd00::/16,dport=5001,dport=6000-6010',
      ]);
      egress = BpfProgram.fromPin(join(devicePins(topo, 'itm', dev), hookAll, 'dispatch'));
      ingress = BpfProgram.fromPin(join(devicePins(topo, 'itm', dev2), hookSome, 'dispatch'));
      dstats = BpfMap.fromPin(join(devicePins(topo, 'itm', dev), hookAll, 'itm_percpu'));
    });
    after(async () => {
      egress?.close();
      ingress?.close();
      dstats?.close();
      await topo?.destroy();
    });

    function run(prog: BpfProgram, frame: Buffer) {
      const r = prog.testRun({ data: frame, repeat: 1 });
      return { retval: r.retval | 0, out: r.data.subarray(0, frame.length), len: r.data.length };
    }

    /** The packet came out the same but for the DSCP, which is `dscp`, with ECN and checksums intact. */
    function assertMarked(frame: Buffer, out: Buffer, dscp: number, what: string) {
      const a = parsePacket(frame);
      const b = parsePacket(out);
      assert.equal(b.dscp, dscp, `${what}: dscp`);
      assert.equal(b.ecn, a.ecn, `${what}: ecn kept`);
      if (a.family === 4) assert.equal(b.ipChecksumOk, true, `${what}: IPv4 header checksum`);
      if (a.l4ChecksumOk !== undefined) assert.equal(b.l4ChecksumOk, a.l4ChecksumOk, `${what}: L4 checksum`);
      // nothing else changed: compare with the DSCP put back
      const back = Buffer.from(out);
      const l3 = a.l3Offset!;
      if (a.family === 4) {
        back[l3 + 1] = frame[l3 + 1]!;
        back.writeUInt16BE(frame.readUInt16BE(l3 + 10), l3 + 10);
      } else {
        back[l3] = frame[l3]!;
        back[l3 + 1] = frame[l3 + 1]!;
      }
      assert.deepEqual(back, frame, `${what}: only the DSCP (and the IPv4 checksum) changed`);
    }

    const base4: PacketSpec = {
      family: 4,
      src: '10.1.0.1',
      dst: '10.2.0.2',
      proto: 'udp',
      sport: 1234,
      dport: 5001,
      ecn: 1,
      payload: 'hello itm',
    };
    const base6: PacketSpec = {
      family: 6,
      src: 'fd01::1',
      dst: 'fd02::2',
      proto: 'tcp',
      sport: 40000,
      dport: 80,
      ecn: 2,
      flowLabel: 0xabcde,
      tcp: { flags: 'S' },
      payload: 'x',
    };

    const marked: Array<[string, PacketSpec]> = [
      ['UDP over IPv4', base4],
      ['TCP over IPv4', { ...base4, proto: 'tcp', tcp: { flags: 'SA' } }],
      ['ICMP over IPv4', { ...base4, proto: 'icmp', icmp: { type: 8 } }],
      ['IPv4 with options', { ...base4, ipOptions: Buffer.from([0x94, 0x04, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00]) }],
      ['IPv4, 40 bytes of options', { ...base4, ipOptions: Buffer.alloc(40, 1) }],
      ['IPv4 first fragment', { ...base4, fragment: { offset: 0, more: true } }],
      ['IPv4 later fragment', { ...base4, fragment: { offset: 64, more: false } }],
      ['IPv4 in a VLAN', { ...base4, vlan: 42 }],
      ['IPv4 with DSCP already set and both ECN bits', { ...base4, dscp: 10, ecn: 3 }],
      ['TCP over IPv6', base6],
      ['UDP over IPv6', { ...base6, proto: 'udp' }],
      ['ICMPv6', { ...base6, proto: 'icmp', icmp: { type: 128 } }],
      [
        'IPv6 with hop-by-hop, destination and routing headers',
        { ...base6, ipv6ExtHeaders: [{ type: 'hop' }, { type: 'dst' }, { type: 'routing', segmentsLeft: 0 }] },
      ],
      ['IPv6 first fragment', { ...base6, proto: 'udp', fragment: { offset: 0, more: true } }],
      ['IPv6 later fragment', { ...base6, proto: 'udp', fragment: { offset: 128, more: false } }],
      ['IPv6 in a VLAN', { ...base6, vlan: 7 }],
      ['IPv4 of another protocol (GRE)', { ...base4, proto: 47, payload: Buffer.alloc(8) }],
    ];
    for (const [what, spec] of marked) {
      test(`marks ${what}`, () => {
        const frame = buildPacket(spec);
        const { retval, out } = run(egress, frame);
        assert.equal(retval, PASS);
        assertMarked(frame, out, EF, what);
      });
    }

    test('passes what it cannot parse untouched, and counts it', () => {
      const before = abi.sumDstats(dstats);
      const cases: Array<[string, Buffer]> = [
        ['ARP', buildArp({ senderMac: '02:00:00:00:00:01', senderIp: '10.1.0.1', targetIp: '10.1.0.2' })],
        ['an unknown ethertype', Buffer.concat([Buffer.alloc(12, 0xaa), Buffer.from([0x88, 0xb5]), Buffer.alloc(46, 0x55)])],
        [
          'IPv4 ethertype with a version-5 header',
          (() => {
            const f = buildPacket(base4);
            f[14] = 0x55;
            return f;
          })(),
        ],
        [
          'IPv4 with a header length below 5',
          (() => {
            const f = buildPacket(base4);
            f[14] = 0x44;
            return f;
          })(),
        ],
        [
          'IPv6 ethertype with a version-4 header',
          (() => {
            const f = buildPacket(base6);
            f[14] = 0x45;
            return f;
          })(),
        ],
        [
          'TCP with a data offset below 5',
          (() => {
            const f = buildPacket({ ...base4, proto: 'tcp' });
            f[14 + 20 + 12] = 0x40;
            return f;
          })(),
        ],
        ['garbage', Buffer.from(Array.from({ length: 80 }, (_, i) => (i * 37 + 11) & 0xff))],
      ];
      for (const [what, frame] of cases) {
        const { retval, out } = run(egress, frame);
        assert.equal(retval, PASS, `${what}: passed`);
        assert.deepEqual(out, frame, `${what}: untouched`);
      }
      const after = abi.sumDstats(dstats);
      assert.ok(after.non_ip - before.non_ip >= 3n, 'non-IP frames counted');
      assert.ok(after.malformed - before.malformed >= 4n, 'malformed headers counted');
    });

    test('a packet truncated at every length passes, untouched or correctly marked', () => {
      const specs: PacketSpec[] = [
        { ...base4, proto: 'tcp', ipOptions: Buffer.alloc(8, 1), vlan: 5 },
        { ...base6, ipv6ExtHeaders: [{ type: 'hop' }, { type: 'dst' }] },
        {
          ...base6,
          vlan: 9,
          proto: 'udp',
          ipv6ExtHeaders: [
            { type: 'routing', segmentsLeft: 0 },
            { type: 'frag', offset: 0, more: true },
          ],
        },
        { ...base4 },
      ];
      for (const spec of specs) {
        const full = buildPacket(spec);
        const p = parsePacket(full);
        // headers end where the payload starts; a packet cut before that must pass untouched
        const ipHeaderEnd = p.l3Offset! + (p.family === 4 ? 20 : 40);
        for (let len = 14; len < full.length; len++) {
          const frame = full.subarray(0, len);
          let r;
          try {
            r = run(egress, Buffer.from(frame));
          } catch (e) {
            // this kernel's test_run itself refuses an untagged IP frame shorter than its IP
            // header; the VLAN-tagged case above still covers those cuts
            if ((e as { code?: string }).code === 'EINVAL' && !spec.vlan && len < ipHeaderEnd) continue;
            throw e;
          }
          const { retval, out } = r;
          assert.equal(retval, PASS, `cut at ${len}: passed`);
          if (len < p.payloadOffset!) {
            assert.deepEqual(out, frame, `cut at ${len} (inside the headers): untouched`);
          } else {
            const o = parsePacket(out);
            assert.equal(o.dscp, EF, `cut at ${len} (headers complete): marked`);
            if (o.family === 4) assert.equal(o.ipChecksumOk, true, `cut at ${len}: IPv4 checksum`);
          }
        }
      }
    });

    test('the interest gates the module: protocol, destination prefixes (IPv4 and IPv6), ports and ranges', () => {
      const AF41 = 34;
      const cases: Array<[string, PacketSpec, boolean]> = [
        ['UDP to 10.2.0.2:5001', { ...base4, dst: '10.2.0.2', dport: 5001 }, true],
        ['UDP to 10.9.9.9:6005 (in the range)', { ...base4, dst: '10.9.9.9', dport: 6005 }, true],
        ['UDP to fd00:1::1:5001', { ...base6, proto: 'udp', dst: 'fd00:1::1', dport: 5001 }, true],
        ['UDP to 10.2.0.2:5002', { ...base4, dport: 5002 }, false],
        ['UDP to 10.2.0.2:6011 (past the range)', { ...base4, dport: 6011 }, false],
        ['UDP to 192.168.1.1:5001', { ...base4, dst: '192.168.1.1' }, false],
        ['UDP to fd02::2:5001 (outside fd00::/16)', { ...base6, proto: 'udp', dport: 5001 }, false],
        ['TCP to 10.2.0.2:5001', { ...base4, proto: 'tcp', tcp: { flags: 'S' } }, false],
        ['a later UDP fragment (no ports to match)', { ...base4, fragment: { offset: 64, more: false } }, false],
      ];
      for (const [what, spec, hit] of cases) {
        const frame = buildPacket(spec);
        const { retval, out } = run(ingress, frame);
        assert.equal(retval, PASS, what);
        if (hit) assertMarked(frame, out, AF41, what);
        else assert.deepEqual(out, frame, `${what}: not in the interest, untouched`);
      }
    });
  });

// The common packets take the fast parse (parse_fast in bpf/dispatcher/parse.h: word-wide stores
// of the whole struct itm_pkt); everything else, and every packet with ITM_FORCE_SLOW_PARSE, the
// general one. Both must leave the same struct itm_pkt for the modules, byte for byte: each frame
// runs through a dispatcher of each kind, and the per-CPU scratch value it wrote is compared.
describe('the fast parse fills struct itm_pkt as the general parse does', { skip }, () => {
  let topo: Topology;
  const progs: Record<'fast' | 'general', { prog: BpfProgram; scratch: BpfMap }> = {} as never;

  before(async () => {
    topo = await twoPeers();
    for (const [kind, peer, env] of [
      ['fast', 'peer', []],
      ['general', 'peer2', ['env', 'ITM_FORCE_SLOW_PARSE=1']],
    ] as const) {
      const dev = topo.dev('itm', peer);
      await topo.exec('itm', [...env, process.execPath, ITMCTL, 'load', 'mark', '--dev', dev, '--hook', 'tc-egress', '--dscp', '0']);
      const dir = join(devicePins(topo, 'itm', dev), 'tc-egress');
      progs[kind] = { prog: BpfProgram.fromPin(join(dir, 'dispatch')), scratch: BpfMap.fromPin(join(dir, 'itm_percpu')) };
    }
  });
  after(async () => {
    for (const p of Object.values(progs)) {
      p.prog.close();
      p.scratch.close();
    }
    await topo?.destroy();
  });

  /** the struct itm_pkt `kind`'s dispatcher left for `frame`: the one CPU's scratch it wrote (its
   * itm_percpu value zeroed before, the counters included) */
  function parsed(kind: 'fast' | 'general', frame: Buffer): Buffer {
    const { prog, scratch } = progs[kind];
    const key = abi.u32(0);
    const stride = Math.ceil(scratch.valueSize / 8) * 8;
    const zero = Buffer.alloc(scratch.lookup(key)!.length);
    scratch.update(key, zero);
    prog.testRun({ data: frame, repeat: 1 });
    const raw = scratch.lookup(key)!;
    const written: Buffer[] = [];
    for (let o = 0; o + scratch.valueSize <= raw.length; o += stride) {
      const at = o + abi.offsetOf(abi.itm_percpu, 'scratch') + abi.offsetOf(abi.itm_scratch, 'pkt');
      const pkt = raw.subarray(at, at + abi.itm_pkt.size);
      if (pkt.some((b) => b !== 0)) written.push(Buffer.from(pkt));
    }
    assert.equal(written.length, 1, `${kind}: one CPU's scratch written`);
    return written[0]!;
  }

  const v4: PacketSpec = { family: 4, src: '10.1.0.1', dst: '10.2.0.2', proto: 'udp', sport: 1234, dport: 5001, payload: 'itm' };
  const v6: PacketSpec = {
    family: 6,
    src: 'fd01::1',
    dst: 'fd02::2',
    proto: 'udp',
    sport: 1234,
    dport: 5001,
    flowLabel: 0x12345,
    payload: 'itm',
  };
  const frames: Array<[string, PacketSpec]> = [
    ['UDP over IPv4', v4],
    ['UDP over IPv4, DSCP and ECN set', { ...v4, dscp: 46, ecn: 3 }],
    ['TCP over IPv4 (SYN, options)', { ...v4, proto: 'tcp', tcp: { flags: 'S', options: Buffer.from([2, 4, 5, 0xb4, 1, 1, 4, 2]) } }],
    ['TCP over IPv4 (FIN, ACK)', { ...v4, proto: 'tcp', sport: 443, dport: 51000, tcp: { flags: 'FA' } }],
    ['IPv4 first fragment', { ...v4, fragment: { offset: 0, more: true } }],
    ['UDP over IPv6', v6],
    ['TCP over IPv6, traffic class set', { ...v6, proto: 'tcp', dscp: 10, ecn: 1, tcp: { flags: 'PA' } }],
    // not the fast parse's: the general one has them in both
    ['IPv4 with options', { ...v4, ipOptions: Buffer.from([1, 1, 1, 0]) }],
    ['IPv4 in a VLAN', { ...v4, vlan: 42 }],
    ['ICMP over IPv4', { ...v4, proto: 'icmp', icmp: { type: 8 } }],
  ];
  for (const [what, spec] of frames)
    test(what, () => {
      const frame = buildPacket(spec);
      const fast = parsed('fast', frame);
      const general = parsed('general', frame);
      assert.deepEqual(abi.decode(abi.itm_pkt, fast), abi.decode(abi.itm_pkt, general), what);
      assert.deepEqual(fast, general, `${what}: byte for byte`);
    });
});

// A slot's src and dst prefixes: up to ITM_INLINE_PREFIXES IPv4 ones are kept in the slot and
// matched by mask (no trie lookup), any other list in the itm_src/itm_dst tries. The same
// prefixes, one more destination in the tries' list, must gate the module alike.
describe('prefix interests: in the slot and in the tries, the same packets', { skip }, () => {
  let topo: Topology;
  const progs: Record<'slot' | 'tries', BpfProgram> = {} as never;
  const dsts = ['10.2.0.2/32', '10.9.0.0/24', '192.168.0.0/16', '0.0.0.0/1'];

  before(async () => {
    topo = await twoPeers();
    const dev = topo.dev('itm', 'peer');
    for (const [kind, hook, extra] of [
      ['slot', 'tc-ingress', []],
      ['tries', 'tc-egress', ['dst=172.16.0.0/12']],
    ] as const) {
      const interest = ['src=10.1.0.0/16', 'src=10.7.7.7/32', ...dsts.map((d) => `dst=${d}`), ...extra].join(',');
      await topo.exec('itm', [
        process.execPath,
        ITMCTL,
        'load',
        'mark',
        '--dev',
        dev,
        '--hook',
        hook,
        '--dscp',
        'af41',
        '--interest',
        interest,
      ]);
      progs[kind] = BpfProgram.fromPin(join(devicePins(topo, 'itm', dev), hook, 'dispatch'));
    }
  });
  after(async () => {
    for (const p of Object.values(progs)) p.close();
    await topo?.destroy();
  });

  test('the slot has its IPv4 prefixes, the longer list none', async () => {
    const dev = topo.dev('itm', 'peer');
    for (const [hook, n] of [
      ['tc-ingress', dsts.length],
      ['tc-egress', 0],
    ] as const) {
      const chain = BpfMap.fromPin(join(devicePins(topo, 'itm', dev), hook, 'itm_chain'));
      try {
        const tables = [0, 1].map((k) => abi.decode<abi.ItmChain>(abi.itm_chain, chain.lookup(Buffer.from([k, 0, 0, 0]))!));
        const slot = tables.flatMap((t) => t.slots.slice(0, t.n)).find((s) => s.flags & abi.ITM_I_DST);
        assert.equal(slot?.n_dst4, n, hook);
        assert.equal(slot?.n_src4, 2, hook);
      } finally {
        chain.close();
      }
    }
  });

  test('the same packets match either way', () => {
    const AF41 = 34;
    const base: PacketSpec = { family: 4, src: '10.1.0.1', dst: '10.2.0.2', proto: 'udp', sport: 1, dport: 2, payload: 'x' };
    const cases: Array<[string, PacketSpec, { slot: boolean; tries: boolean }]> = [
      ['to the /32', base, { slot: true, tries: true }],
      ['next to the /32', { ...base, dst: '10.2.0.3' }, { slot: true, tries: true }], // 0.0.0.0/1 has it
      ['into the /24', { ...base, dst: '10.9.0.200' }, { slot: true, tries: true }],
      ['into the /16', { ...base, dst: '192.168.200.1' }, { slot: true, tries: true }],
      ['outside every prefix', { ...base, dst: '200.1.1.1' }, { slot: false, tries: false }],
      ['into the fifth prefix, the tries only', { ...base, dst: '172.20.0.1' }, { slot: false, tries: true }],
      ['from the other source /32', { ...base, src: '10.7.7.7' }, { slot: true, tries: true }],
      ['from outside the sources', { ...base, src: '10.3.0.1' }, { slot: false, tries: false }],
      [
        'IPv6',
        { family: 6, src: 'fd01::1', dst: 'fd02::2', proto: 'udp', sport: 1, dport: 2, payload: 'x' },
        { slot: false, tries: false },
      ],
    ];
    for (const [what, spec, want] of cases) {
      for (const kind of ['slot', 'tries'] as const) {
        const frame = buildPacket(spec);
        const r = progs[kind].testRun({ data: frame, repeat: 1 });
        assert.equal(parsePacket(r.data.subarray(0, frame.length)).dscp === AF41, want[kind], `${what} (${kind})`);
      }
    }
  });
});
