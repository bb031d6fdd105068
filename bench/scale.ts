// Scale, in the kernel (BPF_PROG_TEST_RUN): what a qos packet costs when its flow is one of 1k,
// 64k or 1M flows in the table. The table is filled from user space, then packets of flows drawn
// at random from it are run one at a time (a repeated frame would find its entry in the cache every
// time), so each lookup finds a cold entry as it would under that many concurrent flows. One
// packet a run includes the test loop's overhead: scale.empty_once_ns is that floor. The spread is
// the 10th to 90th percentile of single packets.
import { join } from 'node:path';
import * as abi from '../src/abi.js';
import { BpfMap, BpfProgram } from '../src/libbpf/index.js';
import { Topology, buildPacket } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl, itmctlJson, pinDir } from '../test/itm.js';
import type { DeviceView } from '../src/registry.js';
import { loadEmpty, median, type Figure } from './common.js';

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
      const frame = buildPacket({ family: 4, src: '10.0.0.1', dst: '10.200.0.1', proto: 'udp', sport: 1, dport: 5001, payload: Buffer.alloc(18) });
      const ns: number[] = [];
      for (let s = 0; s < samples; s++) ns.push(empty.testRun({ data: frame, repeat: 1 }).duration);
      empty.close();
      const sorted = [...ns].sort((a, b) => a - b);
      out.push({ name: 'scale.empty_once_ns', value: median(ns), unit: 'ns/pkt', runs: samples, spread: [sorted[Math.floor(samples * 0.1)]!, sorted[Math.floor(samples * 0.9)]!] });
    }
    const perSize: Record<number, number> = {};
    for (const n of sizes) {
      await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--hook', 'tc-egress', '--threshold', '100', '--table-size', String(Math.max(Math.ceil(n * 1.25), 64)), '--idle-timeout', '0']);
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
            name: `scale.qos_${LABEL[n] ?? String(n)}_ns`, value: perSize[n]!, unit: 'ns/pkt', runs: samples,
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
    const big = sizes[sizes.length - 1]!;
    if (big >= 1e6) {
      out.push({ name: 'scale.qos_1m_vs_1k', value: perSize[big]! / perSize[1_000]!, unit: 'ratio', baseline: 'scale.qos_1k_ns', ratio: perSize[big]! / perSize[1_000]!, runs: samples, spread: [perSize[big]! / perSize[1_000]!, perSize[big]! / perSize[1_000]!] });
    }
  } finally {
    await topo.destroy();
  }
  return out;
}
