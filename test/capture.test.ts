// The shipped `capture` module on real traffic: client — itm — server, capture on the itm host's
// egress towards the server, hosted by itmd; the files it writes read back by tcpdump and by
// the pcapng reader.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AgentStatus } from '../src/agent/protocol.js';
import type { DeviceView, ModuleView } from '../src/registry/index.js';
import { EPB_INBOUND, EPB_OUTBOUND, readPcapng, type Pcapng } from '../src/user/pcapng.js';
import { Capture } from '../modules/capture/capture.js';
import {
  Topology,
  buildPacket,
  decodeFlowPayload,
  l4ChecksumSound,
  namespaceSkipReason,
  parsePacket,
  tcpTransfer,
  udpFlow,
  type Family,
} from './harness/index.js';
import { ITMCTL, cleanItmOnDestroy, clientItmServer, devicePins, itmctl, itmctlJson } from './itm.js';
import * as abi from '../src/abi.js';
import { BpfMap } from '../src/libbpf/index.js';

/** The TCP stream from `src` to `dport` as a capture holds it: every data segment's payload at its
 * place after the SYN; what no segment covers stays a hole (counted). */
function reassemble(
  pcap: Pcapng,
  src: string,
  dport: number,
  bytes: number,
): { data: Buffer; holes: number; segments: number; largest: number } {
  const data = Buffer.alloc(bytes);
  const covered = new Uint8Array(bytes);
  let isn: number | undefined,
    segments = 0,
    largest = 0;
  for (const p of pcap.packets) {
    const q = parsePacket(p.data);
    if (q.src !== src || q.dport !== dport || !q.tcp) continue;
    largest = Math.max(largest, p.origLen);
    if (q.tcp.flags & 0x02) {
      isn = q.tcp.seq;
      continue;
    }
    if (isn === undefined || !q.payload?.length) continue;
    const at = (q.tcp.seq - isn - 1) >>> 0;
    if (at >= bytes) continue;
    segments++;
    q.payload.copy(data, at, 0, Math.min(q.payload.length, bytes - at));
    covered.fill(1, at, Math.min(at + q.payload.length, bytes));
  }
  return { data, holes: covered.reduce((n, c) => n + (c ? 0 : 1), 0), segments, largest };
}

const tcpdumpMissing =
  spawnSync('tcpdump', ['--version']).status === 0 ? undefined : 'tcpdump is not installed (npm run setup installs it)';
const skip = namespaceSkipReason() ?? tcpdumpMissing;

/** the lines tcpdump prints for a file, with a filter */
function tcpdump(file: string, filter = ''): string[] {
  const r = spawnSync('tcpdump', ['-r', file, '-nn', ...(filter ? [filter] : [])], { encoding: 'utf8' });
  assert.equal(r.status, 0, `tcpdump -r ${file}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean);
}

/** every (flow, sequence number) of the UDP flows' datagrams in a capture, checked to appear once */
function flowsIn(pcap: Pcapng): Map<number, number[]> {
  const flows = new Map<number, number[]>();
  for (const p of pcap.packets) {
    const f = decodeFlowPayload(parsePacket(p.data).payload);
    assert.ok(f, 'a datagram of the test flows');
    flows.set(f.flowId, [...(flows.get(f.flowId) ?? []), f.seq]);
  }
  for (const seqs of flows.values()) seqs.sort((a, b) => a - b);
  return flows;
}
const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const upTo = (n: number) => Array.from({ length: n }, (_, i) => i);

describe('the capture file', () => {
  const frame = (seq: number) =>
    buildPacket({ family: 4, src: '10.1.0.1', dst: '10.2.0.2', proto: 'udp', sport: 4000, dport: 5001, payload: Buffer.alloc(64, seq) });
  const opts = (file: string, loadMark: string) => ({
    file,
    name: 'capture',
    dev: 'eth0',
    hook: 'tc-ingress' as const,
    snaplen: 65535,
    maxPackets: 12,
    maxBytes: 0,
    loadMark,
  });

  test('a host restarted after a crash cuts the half-written block off and goes on in a new section, within the budget', () => {
    const dir = mkdtempSync(join(tmpdir(), 'itm-capture-'));
    try {
      const file = join(dir, 'c.pcapng');
      const first = Capture.open(opts(file, 'itm-load a'));
      for (let i = 0; i < 8; i++) first.add(frame(i), 2);
      first.close();
      // what a host killed in the middle of a write leaves: the start of a block
      appendFileSync(file, Buffer.from([6, 0, 0, 0, 200, 0, 0, 0, 0, 0]));
      const second = Capture.open(opts(file, 'itm-load a'));
      for (let i = 8; i < 16; i++) second.add(frame(i), 3);
      assert.match(
        second.close(),
        /^capture on eth0 tc-ingress: 4 packets \(424 bytes\) written to .* \(and 8 before its host was restarted\); 4 packets \(424 bytes\) not written: over the budget/,
      );
      const pcap = readPcapng(readFileSync(file));
      assert.equal(pcap.sections.length, 2);
      assert.deepEqual(
        pcap.packets.map((p) => p.data[p.data.length - 1]),
        upTo(12),
      );
      assert.deepEqual(
        pcap.packets.map((p) => [p.section, p.comments[0], p.flags]),
        upTo(12).map((i) => (i < 8 ? [0, 'itm class=2 hook=tc-ingress', EPB_INBOUND] : [1, 'itm class=3 hook=tc-ingress', EPB_INBOUND])),
      );
      // another load's capture to the same file starts it anew
      const other = Capture.open(opts(file, 'itm-load b'));
      other.add(frame(0), 1);
      other.close();
      const again = readPcapng(readFileSync(file));
      assert.equal(again.sections.length, 1);
      assert.equal(again.packets.length, 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the capture module', { skip }, () => {
  let topo: Topology;
  let dev: string;
  let work: string;

  before(async () => {
    topo = await Topology.create(clientItmServer());
    cleanItmOnDestroy(topo, 'itm');
    dev = topo.dev('itm', 'server');
    work = join(topo.tmpdir, 'work');
    mkdirSync(work);
  });
  after(async () => {
    await topo?.destroy();
  });

  const ctl = (...args: string[]) => itmctl(topo, 'itm', args);
  /** itmctl run in a directory of the test's own */
  const ctlIn = (cwd: string, args: string[]) => topo.exec('itm', [process.execPath, ITMCTL, ...args], { cwd, check: false });
  const loaded = async (): Promise<ModuleView[]> => {
    const [d] = await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', dev]);
    return d?.hooks.flatMap((h) => h.modules) ?? [];
  };
  const moduleView = async (name: string): Promise<ModuleView> => {
    const m = (await loaded()).find((x) => x.name === name);
    assert.ok(m, `${name} is loaded on ${dev}`);
    return m;
  };
  const flow = async (family: Family, dport: number, count: number) => {
    const r = await udpFlow(topo, { from: 'client', to: 'server', family, dport, count, ratePps: 500 });
    assert.equal(r.missing.length, 0, `every datagram to ${dport} over IPv${family} arrived (${r.received} of ${r.sent})`);
  };

  test('load starts the agent; the file holds exactly the packets in its interest, whole; unload leaves it complete', async () => {
    assert.match((await ctl('agent', 'status')).stdout, /no itmd runs/, 'no agent before the load');
    const t0 = BigInt(Date.now()) * 1_000_000n;
    // a relative --file is the user's: relative to where itmctl runs, not to the agent
    const r = await ctlIn(work, [
      'load',
      'capture',
      '--dev',
      dev,
      '--hook',
      'tc-egress',
      '--interest',
      'dport=5001',
      '--file',
      'out.pcapng',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const file = join(work, 'out.pcapng');
    assert.ok(existsSync(file), 'the file is created at load');
    try {
      await flow(4, 5001, 120);
      await flow(6, 5001, 40);
      await flow(4, 5002, 100);
      const m = await moduleView('capture');
      assert.equal(m.params.file, file);
      assert.deepEqual(m.user!.bypassed, { down: 0, behind: 0, size: 0 }, 'no packet went past it');
    } finally {
      await ctl('unload', 'capture', '--dev', dev);
    }
    const t1 = BigInt(Date.now()) * 1_000_000n;

    assert.equal(tcpdump(file).length, 160, 'tcpdump reads every packet');
    assert.equal(tcpdump(file, 'udp dst port 5001').length, 160);
    assert.equal(tcpdump(file, 'dst port 5002').length, 0, 'nothing outside the interest');

    const pcap = readPcapng(readFileSync(file));
    assert.equal(pcap.sections.length, 1);
    assert.deepEqual(
      pcap.interfaces.map((i) => [i.name, i.tsresol, i.snaplen, i.linkType]),
      [[dev, 9, 65535, 1]],
    );
    const flows = flowsIn(pcap);
    assert.deepEqual(
      [...flows.values()].map((s) => s.length).sort((a, b) => a - b),
      [40, 120],
    );
    for (const seqs of flows.values()) assert.deepEqual(seqs, upTo(seqs.length), 'each datagram once');
    let last = 0n;
    for (const p of pcap.packets) {
      const q = parsePacket(p.data);
      // the frame as it is on the wire: nothing itm adds to it on the way to the module
      assert.equal(p.capLen, p.origLen);
      assert.equal(p.origLen, q.l3Offset! + (q.family === 4 ? 20 : 40) + 8 + 64, `frame length (${p.origLen})`);
      // as tcpdump on the device would show it: a checksum the sender left for offload is still
      // the pseudo-header sum there (the host completes it only on the way back)
      assert.equal(l4ChecksumSound(q), true, 'the bytes are intact');
      assert.deepEqual(p.comments, ['itm class=1 hook=tc-egress']);
      assert.equal(p.flags, EPB_OUTBOUND);
      assert.ok(p.ts >= t0 && p.ts <= t1, 'a time stamp in ns within the test');
      assert.ok(p.ts >= last, 'time stamps in order');
      last = p.ts;
    }
    assert.equal(pcap.statistics.length, 1);
    assert.equal(pcap.statistics[0]!.received, 160n);
    assert.equal(pcap.statistics[0]!.delivered, 160n);
  });

  test("a host's own bulk TCP with TSO at tc-egress: the file holds every byte of the stream, as the segments that go on the wire", async () => {
    // the itm host sends: its TCP reaches tc-egress as GSO super-packets (TSO is on, as the
    // kernel sets it), which the dispatcher cuts into segments before they reach the module
    const file = join(topo.tmpdir, 'tso.pcapng');
    const bytes = 5 << 20;
    await ctl('load', 'capture', '--dev', dev, '--interest', 'proto=tcp,dport=6100', '--file', file);
    const dstats = BpfMap.fromPin(join(devicePins(topo, 'itm', dev), 'tc-egress', 'itm_percpu'));
    let sha = '',
      cut: abi.ItmDstats;
    try {
      const before = abi.sumDstats(dstats);
      sha = (await tcpTransfer(topo, { from: 'itm', to: 'server', family: 4, dport: 6100, bytes, srcAddr: topo.addr('itm', 4, 'server') }))
        .sha256;
      cut = abi.sumDstats(dstats);
      cut = { ...cut, segmented: cut.segmented - before.segmented, segments: cut.segments - before.segments };
      const m = await moduleView('capture');
      assert.deepEqual(m.user!.bypassed, { down: 0, behind: 0, size: 0 }, 'no packet went past it');
    } finally {
      dstats.close();
      await ctl('unload', 'capture', '--dev', dev);
    }
    assert.ok(cut.segmented > 0n, 'the sender handed tc-egress super-packets, which were cut');
    assert.ok(cut.segments > 2n * cut.segmented, `into their segments (${cut.segments} from ${cut.segmented})`);
    const pcap = readPcapng(readFileSync(file));
    const s = reassemble(pcap, topo.addr('itm', 4, 'server'), 6100, bytes);
    assert.equal(s.holes, 0, 'every byte of the stream is in the file');
    assert.equal(createHash('sha256').update(s.data).digest('hex'), sha, 'the bytes the server got');
    assert.ok(s.largest <= 1514, `segments as they go on the wire, none larger than the MTU (${s.largest})`);
    assert.equal(tcpdump(file, 'tcp dst port 6100').length, pcap.packets.length, 'tcpdump reads every packet');
  });

  test('budgets: past --max-packets or --max-bytes nothing is written, and every packet still goes through', async () => {
    assert.match((await ctl('agent', 'status')).stdout, /itmd pid \d+/, 'the agent runs from the load before');
    const byPackets = join(topo.tmpdir, 'packets.pcapng'),
      byBytes = join(topo.tmpdir, 'bytes.pcapng');
    await ctl('load', 'capture', '--dev', dev, '--interest', 'proto=udp,dport=5001', '--file', byPackets, '--max-packets', '10');
    // 64 of each 106-byte frame: ten fit in 640 bytes
    await ctl(
      'load',
      'capture',
      '--name',
      'bytes',
      '--dev',
      dev,
      '--interest',
      'proto=udp,dport=5001',
      '--file',
      byBytes,
      '--snaplen',
      '64',
      '--max-bytes',
      '640',
    );
    try {
      await flow(4, 5001, 100);
    } finally {
      await ctl('unload', 'capture', '--dev', dev);
      await ctl('unload', 'bytes', '--dev', dev);
    }
    for (const [file, what] of [
      [byPackets, '--max-packets 10'],
      [byBytes, '--max-bytes 640 --snaplen 64'],
    ] as const) {
      assert.equal(tcpdump(file).length, 10, `${what}: tcpdump reads 10 packets`);
      const pcap = readPcapng(readFileSync(file));
      assert.deepEqual([...flowsIn(pcap).values()], [upTo(10)], `${what}: the first ten`);
      assert.equal(pcap.statistics[0]!.received, 100n);
      assert.equal(pcap.statistics[0]!.delivered, 10n);
      assert.match(pcap.statistics[0]!.comments.join(), /90 packets \(9540 bytes\) were not written: the budget was reached/);
      if (file === byBytes) {
        assert.ok(
          pcap.packets.every((p) => p.capLen === 64 && p.origLen === 106),
          'cut at the snap length, with the length on the wire',
        );
        assert.equal(pcap.interfaces[0]!.snaplen, 64);
      }
    }
  });

  test('on the way in, at xdp and at tc-ingress: each file has every packet, marked inbound, with its hook', async () => {
    const inDev = topo.dev('itm', 'client');
    const files = { xdp: join(topo.tmpdir, 'in-xdp.pcapng'), 'tc-ingress': join(topo.tmpdir, 'in-tc.pcapng') };
    for (const [hook, file] of Object.entries(files)) {
      await ctl(
        'load',
        'capture',
        '--name',
        `in-${hook}`,
        '--dev',
        inDev,
        '--hook',
        hook,
        '--interest',
        'proto=udp,dport=5001',
        '--file',
        file,
      );
    }
    try {
      await flow(4, 5001, 50);
      await flow(6, 5002, 20);
    } finally {
      for (const hook of Object.keys(files)) await ctl('unload', `in-${hook}`, '--dev', inDev, '--hook', hook);
    }
    for (const [hook, file] of Object.entries(files)) {
      assert.equal(tcpdump(file, 'udp dst port 5001').length, 50, `${hook}: tcpdump reads every packet`);
      const pcap = readPcapng(readFileSync(file));
      assert.deepEqual([...flowsIn(pcap).values()], [upTo(50)], `${hook}: each datagram once`);
      assert.equal(pcap.interfaces[0]!.name, inDev);
      for (const p of pcap.packets) {
        assert.equal(p.origLen, 14 + 20 + 8 + 64, `${hook}: the frame, nothing more`);
        assert.deepEqual(p.comments, [`itm class=1 hook=${hook}`]);
        assert.equal(p.flags, EPB_INBOUND);
      }
    }
  });

  test('a --file that cannot be written is refused at load, with nothing left loaded', async () => {
    const refused = async (cwd: string, args: string[], msg: RegExp) => {
      const r = await ctlIn(cwd, ['load', 'capture', '--dev', dev, ...args]);
      assert.equal(r.code, 1, `refused: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, msg);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      assert.deepEqual(
        (await loaded()).map((m) => m.name),
        [],
        'nothing left loaded',
      );
    };
    await refused(
      work,
      ['--file', '/nonexistent-itm-dir/out.pcapng'],
      /^itmctl: capture: cannot create \/nonexistent-itm-dir\/out\.pcapng: directory \/nonexistent-itm-dir does not exist$/m,
    );
    // relative: named as resolved against itmctl's directory
    await refused(
      work,
      ['--file', 'missing/out.pcapng'],
      new RegExp(escapeRe(`cannot create ${work}/missing/out.pcapng: directory ${work}/missing does not exist`)),
    );
    await refused(work, ['--file', work], /it is a directory/);
    await refused(work, [], /--file is required/);
    // two captures cannot write one file
    const shared = join(topo.tmpdir, 'shared.pcapng');
    await ctl('load', 'capture', '--dev', dev, '--file', shared);
    try {
      const r = await ctlIn(work, ['load', 'capture', '--name', 'second', '--dev', dev, '--file', shared]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /is being written by another capture/);
      assert.deepEqual(
        (await loaded()).map((m) => m.name),
        ['capture'],
      );
    } finally {
      await ctl('unload', 'capture', '--dev', dev);
    }
    const st = await itmctlJson<AgentStatus>(topo, 'itm', ['agent', 'status']);
    assert.deepEqual(st.hosts, [], 'the agent hosts nothing');
  });

  test('a new agent adopting the capture goes on in the same file, in a new section, within the same budget', async () => {
    const file = join(topo.tmpdir, 'adopted.pcapng');
    await ctl('load', 'capture', '--dev', dev, '--interest', 'proto=udp,dport=5001', '--file', file, '--max-packets', '50');
    try {
      await flow(4, 5001, 30);
      await ctl('agent', 'stop');
      for (let i = 0; i < 100 && !/no itmd runs/.test((await ctl('agent', 'status')).stdout); i++) await sleep(100);
      await ctl('agent', 'start');
      for (let i = 0; i < 150 && !(await moduleView('capture')).user!.serving; i++) await sleep(100);
      assert.ok((await moduleView('capture')).user!.serving, 'the new agent serves the capture');
      await flow(4, 5001, 30);
    } finally {
      await ctl('unload', 'capture', '--dev', dev);
    }
    assert.equal(tcpdump(file).length, 50, 'tcpdump reads both sections');
    const pcap = readPcapng(readFileSync(file));
    assert.equal(pcap.sections.length, 2);
    assert.match(pcap.sections[1]!.comments.join('\n'), /goes on after its host was restarted: the ones before hold 30 packets/);
    assert.deepEqual(
      pcap.packets.map((p) => p.section),
      [...upTo(30).map(() => 0), ...upTo(20).map(() => 1)],
    );
    const flows = [...flowsIn(pcap).values()];
    assert.deepEqual(flows, [upTo(30), upTo(20)], 'the first flow whole, the second up to the budget');
    assert.deepEqual(
      pcap.statistics.map((s) => [s.section, s.received, s.delivered]),
      [
        [0, 30n, 30n],
        [1, 30n, 20n],
      ],
    );

    // a new load of the same name to the same file starts it anew
    await ctl('load', 'capture', '--dev', dev, '--interest', 'proto=udp,dport=5001', '--file', file);
    try {
      await flow(4, 5001, 5);
    } finally {
      await ctl('unload', 'capture', '--dev', dev);
    }
    const again = readPcapng(readFileSync(file));
    assert.equal(again.sections.length, 1);
    assert.equal(again.packets.length, 5);
  });
});
