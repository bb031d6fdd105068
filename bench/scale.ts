// Scale, in the kernel (BPF_PROG_TEST_RUN): what a qos packet costs when its flow is one of 1k,
// 64k or 1M flows in the table. The table is filled from user space, then packets of flows drawn
// at random from it are run one at a time (a repeated frame would find its entry in the cache every
// time), so each lookup finds a cold entry as it would under that many concurrent flows. One
// packet a run includes the test loop's overhead: scale.empty_once_ns is that floor. The spread is
// the 10th to 90th percentile of single packets.
//
// Then on a veth pair: a sender cycling through 1k, 64k and 1M 5-tuples, with no program, itm's
// qos and nftables (`ct original packets` marking, conntrack holding every flow). Each run first
// sends one packet of every flow (so the tables hold them all), then measures. conntrack's limit
// and hash size are the whole machine's (read-only inside a namespace): they are raised for the run
// and put back after it.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as abi from '../src/abi.js';
import { BpfMap, BpfProgram } from '../src/libbpf/index.js';
import { Topology, buildPacket, run } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl, itmctlJson, pinDir } from '../test/itm.js';
import type { DeviceView } from '../src/registry/index.js';
import { figure, loadEmpty, measure, median, ratioFigure, summarize, udpSink, type Figure, type Summary } from './common.js';
import { buildTools, TOOLS } from './user.js';
import { busyNs, markers, perConfig, type Config } from './veth.js';

const LABEL: Record<number, string> = { 1000: '1k', 65536: '64k', 1000000: '1m' };

/** Flow i: UDP from 10.(i>>16).(i>>8).(i) port 1024+(i%50000) to 10.200.0.1:5001. */
function flowOf(i: number): { src: string; sport: number } {
  return { src: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, sport: 1024 + (i % 50_000) };
}

function flowKey(i: number): Buffer {
  const k = Buffer.alloc(abi.itm_flow.size);
  const { src, sport } = flowOf(i);
  k[10] = k[11] = 0xff;
  Buffer.from(src.split('.').map(Number)).copy(k, 12);
  k[26] = k[27] = 0xff;
  Buffer.from([10, 200, 0, 1]).copy(k, 28);
  const f = abi.itm_flow.fields;
  const off = (n: string) => f.find((x) => x.name === n)!.offset;
  k.writeUInt16LE(sport, off('sport'));
  k.writeUInt16LE(5001, off('dport'));
  k[off('proto')] = 17;
  k[off('family')] = 4;
  return k;
}

export async function scale(opts: { quick?: boolean } = {}): Promise<Figure[]> {
  const sizes = opts.quick ? [1_000, 65_536] : [1_000, 65_536, 1_000_000];
  const samples = opts.quick ? 2_000 : 10_000;
  const topo = await Topology.create({ hosts: ['itm', 'peer'], links: [{ a: 'itm', b: 'peer' }] });
  cleanItmOnDestroy(topo, 'itm');
  const out: Figure[] = [];
  try {
    const dev = topo.dev('itm', 'peer');
    // one packet a run costs the test loop's own overhead too: the empty program, measured alike
    {
      const empty = loadEmpty();
      const frame = buildPacket({
        family: 4,
        src: '10.0.0.1',
        dst: '10.200.0.1',
        proto: 'udp',
        sport: 1,
        dport: 5001,
        payload: Buffer.alloc(18),
      });
      const ns: number[] = [];
      for (let s = 0; s < samples; s++) ns.push(empty.testRun({ data: frame, repeat: 1 }).duration);
      empty.close();
      const sorted = [...ns].sort((a, b) => a - b);
      out.push({
        name: 'scale.empty_once_ns',
        value: median(ns),
        unit: 'ns/pkt',
        runs: samples,
        spread: [sorted[Math.floor(samples * 0.1)]!, sorted[Math.floor(samples * 0.9)]!],
      });
    }
    const perSize: Record<number, number> = {};
    for (const n of sizes) {
      await itmctl(topo, 'itm', [
        'load',
        'qos',
        '--dev',
        dev,
        '--hook',
        'tc-egress',
        '--threshold',
        '100',
        '--table-size',
        String(Math.max(Math.ceil(n * 1.25), 64)),
        '--idle-timeout',
        '0',
      ]);
      try {
        const [d] = await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', dev]);
        const id = d!.hooks.find((h) => h.hook === 'tc-egress')!.modules[0]!.id;
        const hookDir = join(pinDir(topo, 'itm'), String(topo.ifindex('itm', dev)), 'tc-egress');
        const flows = BpfMap.fromPin(join(hookDir, `mod-${id}`, 'qos_flows'));
        const dispatch = BpfProgram.fromPin(join(hookDir, 'dispatch'));
        try {
          const value = Buffer.alloc(flows.valueSize);
          value.writeBigUInt64LE(1000n, 0); // 1000 packets: long, so the packet keeps DSCP 0
          for (let i = 0; i < n; i++) flows.update(flowKey(i), value);
          const ns: number[] = [];
          for (let s = 0; s < samples; s++) {
            const i = Math.floor(Math.random() * n);
            const { src, sport } = flowOf(i);
            const frame = buildPacket({ family: 4, src, dst: '10.200.0.1', proto: 'udp', sport, dport: 5001, payload: Buffer.alloc(18) });
            ns.push(dispatch.testRun({ data: frame, repeat: 1 }).duration);
          }
          perSize[n] = median(ns);
          const sorted = [...ns].sort((a, b) => a - b);
          out.push({
            name: `scale.qos_${LABEL[n] ?? String(n)}_ns`,
            value: perSize[n]!,
            unit: 'ns/pkt',
            runs: samples,
            spread: [sorted[Math.floor(samples * 0.1)]!, sorted[Math.floor(samples * 0.9)]!],
            ...(n !== sizes[0] ? { baseline: 'scale.qos_1k_ns', ratio: perSize[n]! / perSize[sizes[0]!]! } : {}),
          });
        } finally {
          flows.close();
          dispatch.close();
        }
      } finally {
        await itmctl(topo, 'itm', ['down', '--dev', dev]);
      }
    }
    // the dispatcher against the number of prefixes in a module's interest: a no-op module (mark,
    // DSCP 0) interested in 1, 100 or 10k destination /24s, and a packet to the last of them
    const perPrefixes: Record<number, Summary> = {};
    const runs = opts.quick ? 3 : 7;
    for (const n of [1, 100, 10_000]) {
      const prefixes = Array.from({ length: n }, (_, i) => `dst=10.${100 + (i >> 8)}.${i & 255}.0/24`);
      const interest: string[] = [];
      for (let i = 0; i < n; i += 1000) interest.push('--interest', prefixes.slice(i, i + 1000).join(','));
      await itmctl(topo, 'itm', ['load', 'mark', '--dev', dev, '--hook', 'tc-egress', '--dscp', '0', ...interest]);
      const dispatch = BpfProgram.fromPin(join(pinDir(topo, 'itm'), String(topo.ifindex('itm', dev)), 'tc-egress', 'dispatch'));
      try {
        const last = n - 1;
        const frame = buildPacket({
          family: 4,
          src: '10.0.0.1',
          dst: `10.${100 + (last >> 8)}.${last & 255}.7`,
          proto: 'udp',
          sport: 1,
          dport: 5001,
          payload: Buffer.alloc(18),
        });
        perPrefixes[n] = measure(dispatch, frame, runs, opts.quick ? 200_000 : 1_000_000);
      } finally {
        dispatch.close();
        await itmctl(topo, 'itm', ['down', '--dev', dev]);
      }
      const label = n === 10_000 ? '10k' : String(n);
      out.push(
        figure(
          `scale.prefixes_${label}_ns`,
          'ns/pkt',
          perPrefixes[n]!,
          runs,
          n !== 1 ? { name: 'scale.prefixes_1_ns', value: perPrefixes[1]!.median } : undefined,
        ),
      );
    }
    out.push(ratioFigure('scale.prefixes_10k_vs_1', perPrefixes[10_000]!, perPrefixes[1]!, 'scale.prefixes_1_ns', runs));

    const big = sizes[sizes.length - 1]!;
    if (big >= 1e6) {
      out.push({
        name: 'scale.qos_1m_vs_1k',
        value: perSize[big]! / perSize[1_000]!,
        unit: 'ratio',
        baseline: 'scale.qos_1k_ns',
        ratio: perSize[big]! / perSize[1_000]!,
        runs: samples,
        spread: [perSize[big]! / perSize[1_000]!, perSize[big]! / perSize[1_000]!],
      });
    }
  } finally {
    await topo.destroy();
  }
  return out;
}

const CT_MAX = '/proc/sys/net/netfilter/nf_conntrack_max';
const CT_HASH = '/sys/module/nf_conntrack/parameters/hashsize';

/** Bytes of kernel memory a pinned map takes (bpftool's memlock figure). */
async function mapBytes(pin: string): Promise<number> {
  const r = await run(['bpftool', '-j', 'map', 'show', 'pinned', pin]);
  return Number((JSON.parse(r.stdout) as { bytes_memlock?: number }).bytes_memlock ?? NaN);
}

/** Bytes the conntrack entries take now, from the slab they live in. */
function conntrackBytes(): number {
  const line = readFileSync('/proc/slabinfo', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('nf_conntrack '));
  const f = line?.trim().split(/\s+/) ?? [];
  return Number(f[1]) * Number(f[3]); // active objects × object size
}

export async function scaleVeth(opts: { quick?: boolean } = {}): Promise<Figure[]> {
  buildTools();
  const sizes = opts.quick ? [1_000, 1_000_000] : [1_000, 65_536, 1_000_000];
  const runs = opts.quick ? 2 : 3;
  const secs = opts.quick ? 1 : 2;
  const configs: Config[] = ['none', 'itm_qos', 'nft'];
  const topo = await Topology.create({
    hosts: ['a', 'b'],
    links: [{ a: 'a', b: 'b', addrs: { a: ['10.4.0.1/24'], b: ['10.4.0.2/24'] } }],
  });
  cleanItmOnDestroy(topo, 'a');
  const saved = { max: readFileSync(CT_MAX, 'utf8').trim(), hash: readFileSync(CT_HASH, 'utf8').trim() };
  topo.onDestroy(() => {
    writeFileSync(CT_HASH, saved.hash);
    writeFileSync(CT_MAX, saved.max);
  });
  const out: Figure[] = [];
  try {
    const big = Math.max(...sizes);
    writeFileSync(CT_MAX, String(Math.max(Number(saved.max), big * 2)));
    writeFileSync(CT_HASH, String(Math.max(Number(saved.hash), 1 << Math.ceil(Math.log2(big)))));
    const dev = topo.dev('a', 'b');
    const rxPackets = await udpSink(topo, 'b', topo.dev('b', 'a'));
    await topo.exec('a', ['ping', '-c', '1', '-W', '1', '10.4.0.2'], { check: false });
    await topo.exec('a', ['nft', 'add', 'table', 'ip', 'itmbench']); // loads conntrack here
    await topo.exec('a', ['nft', 'delete', 'table', 'ip', 'itmbench']);
    await topo.exec('a', ['sysctl', '-qw', 'net.netfilter.nf_conntrack_acct=1']);
    // 64-byte frames of n flows, for `seconds` or until `count` packets
    const flood = (n: number, seconds: number, count = 0) =>
      topo.exec('a', ['taskset', '-c', '0', join(TOOLS, 'flood'), '10.4.0.2', '10000', String(seconds), '22', String(n), String(count)], {
        timeoutMs: 120_000,
      });
    const pps: Record<string, Summary> = {};
    for (const n of sizes) {
      const label = LABEL[n] ?? String(n);
      const { setup, teardown } = markers(topo, 'a', dev, ['--table-size', String(Math.ceil(n * 1.25))]);
      const got = perConfig(configs);
      const cpu = perConfig(configs);
      for (let rep = 0; rep < runs; rep++) {
        for (const c of configs) {
          await setup[c]();
          try {
            await flood(n, 600, n + 64 * Math.ceil(n / 50_000)); // a packet of every flow at least: the tables hold them all
            if (rep === 0 && c === 'nft') {
              const count = Number((await topo.exec('a', ['cat', '/proc/sys/net/netfilter/nf_conntrack_count'])).stdout);
              if (count < n * 0.99) throw new Error(`scale: conntrack holds ${count} flows, not ${n}`);
              if (n === big) {
                const bytes = conntrackBytes();
                out.push({ name: `scale.nft_${label}_mem_bytes`, value: bytes, unit: 'bytes', runs: 1, spread: [bytes, bytes] });
              }
            }
            if (rep === 0 && c === 'itm_qos') {
              const [d] = await itmctlJson<DeviceView[]>(topo, 'a', ['list', '--dev', dev]);
              const id = d!.hooks.find((h) => h.hook === 'tc-egress')!.modules[0]!.id;
              const pin = join(pinDir(topo, 'a'), String(topo.ifindex('a', dev)), 'tc-egress', `mod-${id}`, 'qos_flows');
              const bytes = await mapBytes(pin);
              out.push({ name: `scale.qos_${label}_mem_bytes`, value: bytes, unit: 'bytes', runs: 1, spread: [bytes, bytes] });
            }
            const before = await rxPackets();
            const b0 = busyNs();
            const r = await flood(n, secs);
            const b1 = busyNs();
            await sleep(100);
            const rx = (await rxPackets()) - before;
            const s = Number(/seconds=([\d.]+)/.exec(r.stdout)?.[1] ?? secs);
            got[c].push(rx / s);
            cpu[c].push((b1 - b0) / rx);
          } finally {
            await teardown[c]();
          }
        }
      }
      for (const c of configs) {
        process.stderr.write(
          `bench: scale veth ${label} flows ${c}: ${got[c].map((x) => Math.round(x)).join(' ')} pkt/s, ${cpu[c].map((x) => Math.round(x)).join(' ')} CPU ns/pkt\n`,
        );
        pps[`${c}_${label}`] = summarize(got[c]);
        out.push(
          figure(
            `scale.veth_${c}_${label}_pps`,
            'pkt/s',
            pps[`${c}_${label}`]!,
            runs,
            c !== 'none' ? { name: `scale.veth_none_${label}_pps`, value: pps[`none_${label}`]!.median } : undefined,
          ),
        );
        out.push(figure(`scale.veth_${c}_${label}_cpu_ns`, 'CPU ns/pkt', summarize(cpu[c]), runs));
      }
    }
    out.push(ratioFigure('scale.qos_vs_nft_1m', pps.itm_qos_1m!, pps.nft_1m!, 'scale.veth_nft_1m_pps', runs));
    out.push(ratioFigure('scale.veth_qos_1m_vs_1k', pps.itm_qos_1m!, pps.itm_qos_1k!, 'scale.veth_itm_qos_1k_pps', runs));
  } finally {
    await topo.destroy();
  }
  return out;
}
