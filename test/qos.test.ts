// qos on real TCP: packets read on the wire at the server, in the order itm marked them.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BpfMap } from '../src/libbpf/index.js';
import { decode, itm_flow, type ItmFlow } from '../src/abi.js';
import { qos_flow_state, type QosFlowState } from '../modules/qos/qos.abi.js';
import type { DeviceView } from '../src/registry/index.js';
import {
  Topology,
  buildPacket,
  capture,
  namespaceSkipReason,
  sendFrames,
  tcpTransfer,
  udpFlow,
  type Family,
  type ParsedPacket,
} from './harness/index.js';
import { cleanItmOnDestroy, clientItmServer, itmctl, modulePin } from './itm.js';
import { parseLevels, EVERY } from '../modules/qos/levels.js';
import { FlowSizes, thresholdForBytes, thresholdForFlows } from '../modules/qos/controller.js';

const skip = namespaceSkipReason();
const FIN = 0x01;
const MTU = 1500;

describe('qos levels', () => {
  test('parses levels and refuses what makes no sense', () => {
    assert.deepEqual(parseLevels('100:af41,1000:af21,*:cs1'), [
      { threshold: 100n, dscp: 34 },
      { threshold: 1000n, dscp: 18 },
      { threshold: EVERY, dscp: 8 },
    ]);
    assert.deepEqual(parseLevels('*:ef'), [{ threshold: EVERY, dscp: 46 }]);
    for (const [bad, re] of [
      ['100:af41,50:cs1,*:be', /thresholds must increase \(100 then 50\)/],
      ['100:af41,100:cs1,*:be', /thresholds must increase/],
      ['100:af41,1000:af21', /the last level must be '\*'/],
      ['100:nope,*:cs1', /DSCP of --levels level '100:nope'/],
      ['0:ef,*:be', /threshold '0' must be a positive/],
      ['-3:ef,*:be', /threshold '-3' must be a positive/],
      ['*:ef,100:be', /'\*' must be the last level/],
      ['100,*:be', /is not THRESHOLD:DSCP/],
      ['1:ef,2:ef,3:ef,4:ef,5:ef,6:ef,7:ef,8:ef,*:be', /at most 8 levels/],
      ['100:ef,,*:be', /an empty level/],
    ] as const) {
      assert.throws(() => parseLevels(bad), re, bad);
    }
  });
});

describe('qos controller arithmetic', () => {
  test('bytes: the smallest threshold that keeps the target fraction of bytes short', () => {
    const mix = [...Array(10).fill(10), 1000]; // ten mice of 10, one elephant of 1000: 1100 in all
    assert.equal(thresholdForBytes(mix, 0.1), 10, '110 short: the mice whole, 10 of the elephant');
    assert.equal(thresholdForBytes(mix, 0.5), 450, '550 short: the mice, 450 of the elephant');
    assert.equal(thresholdForBytes(mix, 1), 1000);
    assert.equal(thresholdForBytes([100], 0.25), 25);
  });
  test('flows: the target quantile of the sizes', () => {
    const sizes = Array.from({ length: 100 }, (_, i) => i + 1);
    assert.equal(thresholdForFlows(sizes, 0.9), 90);
    assert.equal(thresholdForFlows(sizes, 0.01), 1);
    assert.equal(thresholdForFlows([...Array(20).fill(5), ...Array(20).fill(50)], 0.5), 5);
  });
  test('more elephants move the byte threshold down, more mice move it up', () => {
    const base = [...Array(50).fill(10), ...Array(5).fill(1000)];
    const moreElephants = [...base, ...Array(20).fill(5000)];
    const moreMice = [...base, ...Array(500).fill(10)];
    const t = thresholdForBytes(base, 0.2);
    assert.ok(thresholdForBytes(moreElephants, 0.2) > t, 'the same fraction of more bytes needs a larger threshold');
    assert.ok(thresholdForBytes(moreMice, 0.2) < t, 'mice alone carry more of the target');
  });
  test('refuses no data and targets outside (0, 1]', () => {
    assert.throws(() => thresholdForBytes([], 0.1), /no flows/);
    assert.throws(() => thresholdForFlows([3], 0), /not in \(0, 1\]/);
    assert.throws(() => thresholdForBytes([3], 1.5), /not in \(0, 1\]/);
  });
  test('flow sizes: a flow gone from the table is kept at its largest size', () => {
    const f = new FlowSizes(3);
    f.observe(
      new Map([
        ['a', 5],
        ['b', 7],
      ]),
    );
    f.observe(new Map([['a', 9]]));
    assert.deepEqual(
      f.sizes().sort((x, y) => x - y),
      [7, 9],
    );
    f.observe(new Map());
    f.observe(
      new Map([
        ['c', 1],
        ['d', 2],
      ]),
    );
    f.observe(new Map());
    assert.deepEqual(f.sizes(), [9, 1, 2], 'the most recent three');
  });
});

describe('qos on real traffic', { skip }, () => {
  let topo: Topology;
  let dev: string;
  let srvDev: string;
  before(async () => {
    topo = await Topology.create(clientItmServer());
    cleanItmOnDestroy(topo, 'itm');
    dev = topo.dev('itm', 'server');
    srvDev = topo.dev('server', 'itm');
    // a forwarding ITM as on real hardware: the client's frames cross the wire one MTU each (a
    // veth would carry its TSO super-packets across whole), and the ITM's GRO (on, as on NICs)
    // merges them again, so its tc-egress sees super-packets of forwarded TCP
    await topo.exec('client', ['ethtool', '-K', topo.dev('client', 'itm'), 'tso', 'off', 'gso', 'off']);
    await topo.exec('itm', ['ethtool', '-K', topo.dev('itm', 'client'), 'gro', 'on']);
  });
  after(async () => {
    await topo?.destroy();
  });

  /** where the transfer comes from: the client, forwarded by the ITM (GRO on), or the ITM itself
   * (its own TCP, TSO on) */
  type From = 'client' | 'itm';
  const PLACES: From[] = ['client', 'itm'];
  const placed = (from: From) => (from === 'client' ? 'forwarded after GRO' : "the ITM's own TCP with TSO");

  /** One TCP transfer to the server with qos loaded as `args`; the sender's packets as the server
   * saw them (a super-packet arrives whole: a veth carries it across so). */
  async function transfer(args: string[], family: Family, bytes: number, from: From = 'client'): Promise<ParsedPacket[]> {
    await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, ...args]);
    try {
      const cap = await capture(topo, 'server', { dev: srvDev, filter: 'tcp dst port 5201', snaplen: 128, direction: 'in' });
      try {
        // both ends on one CPU: the packets reach itm, and the server, in the order they were sent
        await tcpTransfer(topo, {
          from,
          to: 'server',
          family,
          dport: 5201,
          bytes,
          cpu: 0,
          ...(from === 'itm' ? { srcAddr: topo.addr('itm', family, 'server') } : {}),
        });
      } finally {
        await cap.stop(300);
      }
      const pkts = await cap.stop();
      assert.equal(cap.stats?.droppedByKernel, 0, 'the capture kept every packet');
      assert.ok(
        pkts.some((p) => segsOf(p) > 1),
        `super-packets came by (the largest ${Math.max(...pkts.map(segsOf))} segments)`,
      );
      return pkts;
    } finally {
      await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
    }
  }

  /** The segments a captured packet goes on the wire as: a super-packet's payload cut at its
   * segment size, what fills a 1500-byte frame after its headers (the MSS the sender uses). */
  function segsOf(p: ParsedPacket): number {
    const hdr = p.payloadOffset! - p.l3Offset!;
    return p.payloadLen ? Math.max(1, Math.ceil(p.payloadLen / (MTU - hdr))) : 1;
  }
  /** the IP bytes of those segments, each with its own headers */
  const ipBytesOf = (p: ParsedPacket) => BigInt(p.origLen - p.l3Offset! + (segsOf(p) - 1) * (p.payloadOffset! - p.l3Offset!));

  /** Each packet's DSCP is the one its flow's size at its first segment (or byte) calls for; FIN is
   * always short, and ends the flow's state (the last ACKs after it start a new, short, flow). */
  function assertLevels(pkts: ParsedPacket[], size: (p: ParsedPacket) => bigint, levels: Array<[bigint, number]>): void {
    let total = 0n;
    pkts.forEach((p, i) => {
      const first = total + 1n;
      total += size(p);
      const fin = (p.tcpFlags! & FIN) !== 0;
      const want = fin ? levels[0]![1] : levels.find(([t]) => first <= t)![1];
      assert.equal(
        p.dscp,
        want,
        `packet ${i + 1} (${segsOf(p)} segments, the flow's size at its first ${first}, flags ${p.tcpFlags}): dscp`,
      );
      assert.equal(p.ipChecksumOk ?? true, true);
      if (fin) total = 0n;
    });
  }

  /** What went in the first level before the FIN, in `size` units, and the last packet there:
   * a level ends within one super-packet past its threshold. */
  function assertBound(pkts: ParsedPacket[], size: (p: ParsedPacket) => bigint, threshold: bigint, dscp: number, what: string): string {
    const beforeFin = pkts.slice(
      0,
      pkts.findIndex((p) => p.tcpFlags! & FIN),
    );
    const first = beforeFin.filter((p) => p.dscp === dscp);
    const sum = first.reduce((a, p) => a + size(p), 0n);
    const last = size(first[first.length - 1]!);
    const said = `${what}: ${sum} in the first level (threshold ${threshold}), the last packet there ${last}, in ${first.length} packets`;
    assert.ok(sum >= threshold && sum - last < threshold, said);
    return said;
  }
  const segs = (p: ParsedPacket) => BigInt(segsOf(p));

  for (const from of PLACES) {
    test(`--threshold 100, ${placed(from)}: 100 segments and at most one super-packet more are EF, the rest best effort, FIN short (IPv4)`, async (t) => {
      const pkts = await transfer(['--threshold', '100'], 4, 1_000_000, from);
      assertLevels(pkts, segs, [
        [100n, 46],
        [EVERY, 0],
      ]);
      t.diagnostic(`${placed(from)}: ${assertBound(pkts, segs, 100n, 46, 'segments EF')}`);
      assert.ok(
        pkts.some((p) => p.tcpFlags! & FIN && p.dscp === 46),
        'the FIN was marked short',
      );
    });

    test(`--by bytes, ${placed(from)}: the switch comes where the flow passes the byte threshold, on the wire`, async (t) => {
      const pkts = await transfer(['--threshold', '150000', '--by', 'bytes'], 4, 1_000_000, from);
      // the kernel counts IP bytes as the segments carry them: each with its own headers
      assertLevels(pkts, ipBytesOf, [
        [150_000n, 46],
        [EVERY, 0],
      ]);
      t.diagnostic(`${placed(from)}: ${assertBound(pkts, ipBytesOf, 150_000n, 46, 'bytes EF')}`);
    });

    test(`three levels, ${placed(from)}`, async () => {
      const pkts = await transfer(['--levels', '100:af41,300:af21,*:cs1'], 4, 1_000_000, from);
      assertLevels(pkts, segs, [
        [100n, 34],
        [300n, 18],
        [EVERY, 8],
      ]);
      assertBound(pkts, segs, 100n, 34, 'the first level');
    });

    test(`IPv6, ${placed(from)}`, async () => {
      const pkts = await transfer(['--threshold', '100'], 6, 1_000_000, from);
      assert.equal(pkts[0]!.family, 6);
      assertLevels(pkts, segs, [
        [100n, 46],
        [EVERY, 0],
      ]);
      assertBound(pkts, segs, 100n, 46, 'segments');
    });
  }

  test('FIN ends a flow: its state outlives it a moment for the last ACKs, then goes; RST ends it at once', async () => {
    await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '10']);
    const flows = BpfMap.fromPin(modulePin(topo, 'itm', dev, 'tc-egress', 0, 'qos_flows'));
    try {
      const to = (port: number) =>
        flows
          .entries()
          .map(([k, v]) => [decode<ItmFlow>(itm_flow, k), decode<QosFlowState>(qos_flow_state, v)] as const)
          .filter(([k]) => k.dport === port);
      // hand-made segments, so that the timing is the test's: a SYN, some data, a FIN, its last ACK
      const cdev = topo.dev('client', 'itm');
      const frame = (flags: string, dport = 5602, len = 0) =>
        buildPacket({
          srcMac: topo.mac('client', cdev),
          dstMac: topo.mac('itm', topo.dev('itm', 'client')),
          family: 4,
          src: topo.addr('client', 4),
          dst: topo.addr('server', 4),
          proto: 'tcp',
          sport: 43001,
          dport,
          tcp: { flags },
          payload: Buffer.alloc(len, 0x61),
        });
      await sendFrames(topo, 'client', cdev, [frame('S', 5601), frame('PA', 5601, 500), frame('FA', 5601), frame('A', 5601)]);
      const closing = to(5601);
      assert.equal(closing.length, 1, 'right after its FIN the flow is still there, for its last ACKs');
      assert.equal(closing[0]![1].closing, 1, 'marked as finished');
      assert.equal(closing[0]![1].packets, 3n, 'the ACK after the FIN did not count');
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepEqual(to(5601), [], 'a second after its FIN the state is gone');

      // a new connection on the same 5-tuple, right after a FIN, starts afresh
      await sendFrames(topo, 'client', cdev, [frame('S', 5603), frame('FA', 5603), frame('S', 5603), frame('A', 5603)]);
      const again = to(5603);
      assert.equal(again[0]![1].closing, 0, 'the SYN after the FIN opened a new flow');
      assert.equal(again[0]![1].packets, 2n, 'counted from its SYN');

      // RST: a SYN, then a RST, of another flow
      await sendFrames(topo, 'client', cdev, [frame('S')]);
      assert.equal(to(5602).length, 1, 'the SYN made a flow');
      await sendFrames(topo, 'client', cdev, [frame('R')]);
      assert.deepEqual(to(5602), [], 'the RST removed it at once');
    } finally {
      flows.close();
      await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
    }
  });

  test("--tcp-seq: a retransmission adds nothing to the flow's bytes", async () => {
    const cdev = topo.dev('client', 'itm');
    const seg = (flags: string, seq: number, len: number) =>
      buildPacket({
        srcMac: topo.mac('client', cdev),
        dstMac: topo.mac('itm', topo.dev('itm', 'client')),
        family: 4,
        src: topo.addr('client', 4),
        dst: topo.addr('server', 4),
        proto: 'tcp',
        sport: 44001,
        dport: 5701,
        tcp: { flags, seq },
        payload: Buffer.alloc(len, 0x5a),
      });
    // SYN, 1000 bytes, the same 1000 again (a retransmission), the next 1000
    const frames = [seg('S', 1000, 0), seg('PA', 1001, 1000), seg('PA', 1001, 1000), seg('PA', 2001, 1000)];
    const bytesWith = async (args: string[]) => {
      await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '100000', '--by', 'bytes', ...args]);
      const flows = BpfMap.fromPin(modulePin(topo, 'itm', dev, 'tc-egress', 0, 'qos_flows'));
      try {
        await sendFrames(topo, 'client', cdev, frames);
        const hit = flows
          .entries()
          .map(([k, v]) => [decode<ItmFlow>(itm_flow, k), decode<QosFlowState>(qos_flow_state, v)] as const)
          .find(([k]) => k.dport === 5701);
        return Number(hit![1].bytes);
      } finally {
        flows.close();
        await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
      }
    };
    assert.equal(await bytesWith([]), 40 + 3 * 1040, 'by IP length, the retransmission counts');
    assert.equal(await bytesWith(['--tcp-seq']), 40 + 1000 + 1000, 'by sequence progress, it does not');
  });

  test('a table of 64 flows under 1,000 concurrent ones: every packet goes through, the table stays at 64', async () => {
    await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '2', '--table-size', '64']);
    try {
      const cdev = topo.dev('client', 'itm');
      const frames = (round: number) =>
        Array.from({ length: 1000 }, (_, i) =>
          buildPacket({
            srcMac: topo.mac('client', cdev),
            dstMac: topo.mac('itm', topo.dev('itm', 'client')),
            family: 4,
            src: topo.addr('client', 4),
            dst: topo.addr('server', 4),
            proto: 'udp',
            sport: 20000 + i,
            dport: 5301,
            payload: `flow ${i} round ${round}`,
          }),
        );
      const cap = await capture(topo, 'server', { dev: srvDev, filter: 'udp dst port 5301', snaplen: 96, direction: 'in' });
      const flows = BpfMap.fromPin(modulePin(topo, 'itm', dev, 'tc-egress', 0, 'qos_flows'));
      let most = 0;
      try {
        assert.equal(flows.maxEntries, 64);
        for (let round = 0; round < 3; round++) {
          await sendFrames(topo, 'client', cdev, frames(round));
          most = Math.max(most, flows.keys().length);
        }
      } finally {
        flows.close();
      }
      const pkts = await cap.stop(300);
      assert.equal(cap.stats?.droppedByKernel, 0);
      assert.equal(pkts.length, 3000, 'every packet went through');
      assert.ok(most <= 64 && most > 0, `the table held ${most} flows`);
      const [d] = JSON.parse((await itmctl(topo, 'itm', ['list', '--json', '--dev', dev])).stdout) as DeviceView[];
      const m = d!.hooks.find((h) => h.hook === 'tc-egress')!.modules[0]!;
      assert.equal(m.counters.errors, 0, 'no module error');
      assert.equal(m.counters.matched, m.counters.seen);
    } finally {
      await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
    }
  });

  test('itmctl flows qos: the flows with their size and level, largest first', async () => {
    await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '10']);
    try {
      for (const [sport, count] of [
        [41001, 5],
        [41002, 50],
        [41003, 20],
      ] as const) {
        await udpFlow(topo, { from: 'client', to: 'server', family: 4, sport, dport: 5401, count, ratePps: 500 });
      }
      type Flows = {
        total: number;
        flows: Array<{ sport: number; dport: number; packets: number; level: number; dscp: string; size: number }>;
      };
      const all = JSON.parse((await itmctl(topo, 'itm', ['flows', 'qos', '--dev', dev, '--json', '--top', '0'])).stdout) as Flows;
      const ours = all.flows.filter((f) => f.dport === 5401);
      assert.deepEqual(
        ours.map((f) => [f.sport, f.packets, f.level]),
        [
          [41002, 50, 2],
          [41003, 20, 2],
          [41001, 5, 1],
        ],
      );
      assert.equal(ours[0]!.dscp, 'be (0)');
      assert.equal(ours[2]!.dscp, 'ef (46)');
      const top = JSON.parse((await itmctl(topo, 'itm', ['flows', 'qos', '--dev', dev, '--json', '--top', '1'])).stdout) as Flows;
      assert.equal(top.flows.length, 1);
      assert.equal(top.flows[0]!.sport, 41002);
      const text = (await itmctl(topo, 'itm', ['flows', 'qos', '--dev', dev])).stdout;
      assert.match(text, /10\.1\.0\.1:41002\s+10\.2\.0\.2:5401/);
    } finally {
      await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
    }
  });

  test('the composed chain: the flow table outlives the relinks of other loads; two instances keep their own', async () => {
    type Flows = { flows: Array<{ sport: number; dport: number; packets: number; level: number }> };
    const flowsOf = async (name: string) =>
      (JSON.parse((await itmctl(topo, 'itm', ['flows', name, '--dev', dev, '--json', '--top', '0'])).stdout) as Flows).flows;
    const send = (sport: number, dport: number, count: number) =>
      udpFlow(topo, { from: 'client', to: 'server', family: 4, sport, dport, count, ratePps: 500 });
    await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '10']);
    try {
      await send(43001, 5601, 20);
      // a load relinks the hook's program: qos's table is the same map after it
      await itmctl(topo, 'itm', ['load', 'mark', '--name', 'other', '--dev', dev, '--dscp', '0', '--interest', 'dport=9']);
      await itmctl(topo, 'itm', ['load', 'qos', '--name', 'qos2', '--dev', dev, '--threshold', '1000', '--interest', 'dport=5602']);
      assert.deepEqual(
        (await flowsOf('qos')).filter((f) => f.sport === 43001).map((f) => [f.packets, f.level]),
        [[20, 2]],
        'the flow is still there, with its 20 packets',
      );
      await send(43001, 5601, 5);
      await send(43002, 5602, 20);
      await itmctl(topo, 'itm', ['unload', 'other', '--dev', dev]);
      const one = (await flowsOf('qos')).filter((f) => f.sport === 43001 || f.sport === 43002);
      assert.deepEqual(
        one.map((f) => [f.sport, f.packets, f.level]).sort(),
        [
          [43001, 25, 2],
          [43002, 20, 2],
        ],
        'qos counted on across the relinks; at its threshold of 10 both flows are long',
      );
      const two = await flowsOf('qos2');
      assert.deepEqual(
        two.map((f) => [f.sport, f.packets, f.level]),
        [[43002, 20, 1]],
        'qos2 has a table of its own, with only its interest in it, and its own threshold of 1000',
      );
    } finally {
      for (const n of ['qos2', 'other', 'qos']) await itmctl(topo, 'itm', ['unload', n, '--dev', dev]).catch(() => {});
    }
  });

  test('a flow idle past --idle-timeout has ended: its next packets start a new, short, flow', async () => {
    await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '5', '--idle-timeout', '1']);
    try {
      const send = (count: number) =>
        udpFlow(topo, { from: 'client', to: 'server', family: 4, sport: 42001, dport: 5501, count, ratePps: 200 });
      const pkts = await (async () => {
        const cap = await capture(topo, 'server', { dev: srvDev, filter: 'udp dst port 5501', snaplen: 96, direction: 'in' });
        await send(10);
        await new Promise((r) => setTimeout(r, 1600));
        const listed = JSON.parse((await itmctl(topo, 'itm', ['flows', 'qos', '--dev', dev, '--json'])).stdout) as {
          flows: Array<{ sport: number }>;
        };
        assert.ok(!listed.flows.some((f) => f.sport === 42001), 'an aged-out flow is not listed');
        await send(3);
        return cap.stop(300);
      })();
      assert.deepEqual(
        pkts.map((p) => p.dscp),
        [46, 46, 46, 46, 46, 0, 0, 0, 0, 0, 46, 46, 46],
      );
    } finally {
      await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
    }
  });

  test('--adaptive: controller-update moves the threshold to the flow mix, in place, both ways', async () => {
    const cdev = topo.dev('client', 'itm');
    const frame = (sport: number, n: number) =>
      buildPacket({
        srcMac: topo.mac('client', cdev),
        dstMac: topo.mac('itm', topo.dev('itm', 'client')),
        family: 4,
        src: topo.addr('client', 4),
        dst: topo.addr('server', 4),
        proto: 'udp',
        sport,
        dport: 5801,
        payload: `p${n}`,
      });
    // the mix: 20 flows of 5 packets and 20 of 50; half the flows are 5 packets or fewer
    const mix: Buffer[] = [];
    for (let i = 0; i < 40; i++) for (let n = 0; n < (i < 20 ? 5 : 50); n++) mix.push(frame(45000 + i, n));
    for (const start of [1000, 2]) {
      await itmctl(topo, 'itm', [
        'load',
        'qos',
        '--dev',
        dev,
        '--threshold',
        String(start),
        '--adaptive',
        '--target-short',
        '0.5',
        '--target-of',
        'flows',
      ]);
      try {
        await sendFrames(topo, 'client', cdev, mix);
        const w = await itmctl(topo, 'itm', ['watch', 'qos', '--dev', dev, '--count', '1', '--interval', '50', '--json']);
        const period = JSON.parse(w.stdout.trim().split('\n').pop()!) as { changed?: string; classes?: Record<string, string> };
        assert.match(period.changed ?? '', new RegExp(`threshold ${start} → 5 `), `from ${start}: ${period.changed}`);
        assert.ok(period.classes && Object.keys(period.classes).length === 2, 'class-update reports both levels');
        // the data path uses it at once: a new flow of 8 packets is short for 5
        const cap = await capture(topo, 'server', {
          dev: srvDev,
          filter: 'udp dst port 5801 and src port 46000',
          snaplen: 96,
          direction: 'in',
        });
        await sendFrames(
          topo,
          'client',
          cdev,
          Array.from({ length: 8 }, (_, n) => frame(46000, n)),
        );
        assert.deepEqual(
          (await cap.stop(300)).map((p) => p.dscp),
          [46, 46, 46, 46, 46, 0, 0, 0],
        );
      } finally {
        await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
      }
    }
  });

  test('--bidir: instances at ingress and egress of a device share one table, so ACKs count too', async () => {
    // GRO off at the ITM for this one: the client's segments then count one by one, as the
    // server's ACKs do, and the ACKs' share shows (a 44-segment super-packet would hide them)
    const gro = (on: boolean) => topo.exec('itm', ['ethtool', '-K', topo.dev('itm', 'client'), 'gro', on ? 'on' : 'off']);
    await gro(false);
    for (const hook of ['tc-egress', 'tc-ingress']) {
      await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--hook', hook, '--threshold', '100', '--bidir']);
    }
    try {
      const pins = (hook: string) => modulePin(topo, 'itm', dev, hook, 0, 'qos_flows');
      const a = BpfMap.fromPin(pins('tc-egress'));
      const b = BpfMap.fromPin(pins('tc-ingress'));
      assert.equal(a.id, b.id, 'one table');
      a.close();
      b.close();
      const cap = await capture(topo, 'server', { dev: srvDev, filter: 'tcp dst port 5202', snaplen: 96, direction: 'in' });
      await tcpTransfer(topo, { from: 'client', to: 'server', family: 4, dport: 5202, bytes: 400_000, cpu: 0 });
      const pkts = await cap.stop(300);
      const beforeFin = pkts.slice(
        0,
        pkts.findIndex((p) => p.tcpFlags! & FIN),
      );
      const short = beforeFin.filter((p) => p.dscp === 46).length;
      const shortSegs = beforeFin.filter((p) => p.dscp === 46).reduce((a, p) => a + segsOf(p), 0);
      // the server's ACKs, counted at ingress, bring the flow to 100 packets before the client
      // sends 100 segments
      assert.ok(shortSegs < 100 && shortSegs > 20, `${shortSegs} of the client's segments were short`);
      // the short ones come first; packets marked on two CPUs at once may swap places around the
      // switch, so allow a few
      const lastShort = beforeFin.map((p) => p.dscp).lastIndexOf(46);
      assert.ok(lastShort < short + 4, `the short packets came first (the last at ${lastShort}, ${short} in all)`);
    } finally {
      for (const hook of ['tc-egress', 'tc-ingress']) await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev, '--hook', hook]);
      await gro(true);
    }
  });

  test('bad levels load nothing', async () => {
    const r = await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--levels', '100:af41,10:cs1,*:be'], { check: false });
    assert.equal(r.code, 1);
    assert.match(r.stderr.trim(), /^itmctl: invalid --levels .*thresholds must increase/);
    const l = await itmctl(topo, 'itm', ['list', '--json']);
    assert.ok(!l.stdout.includes('"qos"'), 'nothing loaded');
  });
});
