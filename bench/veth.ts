// End to end on a veth pair between two namespaces: what size-aware marking costs a sender that
// saturates its core, done by itm's qos, by nftables (`ct original packets` + `ip dscp set`) and by
// iptables (`connbytes` + `DSCP`), against no program, on the same traffic in the same run. 64-byte
// UDP frames from one sendmmsg sender pinned to CPU 0; the receiver counts what arrives and drops it
// at tc ingress. Then TCP bulk throughput, one iperf3 connection a run. The configurations take
// turns run by run, so drift hits them alike.
import { readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { Topology, capture } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl } from '../test/itm.js';
import { figure, ratioFigure, summarize, udpSink, type Figure } from './common.js';
import { buildTools, TOOLS } from './user.js';
import { BPF_BUILD } from '../src/catalog.js';
import { BPFFS } from '../src/state.js';

const TCX_ATTACH = join(dirname(fileURLToPath(import.meta.url)), 'tcx-attach.js');

const NFT = `table ip itmbench {
  chain post {
    type filter hook postrouting priority mangle; policy accept;
    ct original packets <= 100 ip dscp set ef
    ct original packets > 100 ip dscp set cs0
  }
}
`;
const IPT = [
  [
    'POSTROUTING',
    '-m',
    'connbytes',
    '--connbytes',
    '0:100',
    '--connbytes-dir',
    'original',
    '--connbytes-mode',
    'packets',
    '-j',
    'DSCP',
    '--set-dscp-class',
    'EF',
  ],
  [
    'POSTROUTING',
    '-m',
    'connbytes',
    '--connbytes',
    '101:',
    '--connbytes-dir',
    'original',
    '--connbytes-mode',
    'packets',
    '-j',
    'DSCP',
    '--set-dscp',
    '0',
  ],
];

export type Config = 'none' | 'empty' | 'hand_qos' | 'itm_qos' | 'nft' | 'iptables';

/** The floors, on the tcx hook itm uses: an empty program, and the hand-written qos of the
 * fastpath bench (one program doing the dispatcher's and qos's work), each put there by
 * bench/tcx-attach.ts and taken off by removing its link's pin. */
function tcxProgram(topo: Topology, host: string, dev: string, object: string, prog: string) {
  const pin = join(BPFFS, `bench-${process.pid}-${prog}`);
  return {
    setup: () => topo.exec(host, [process.execPath, TCX_ATTACH, join(BPF_BUILD, 'bench', object), prog, dev, 'egress', pin]),
    teardown: () => rmSync(pin, { force: true }),
  };
}

/** Setting up and taking down each marking configuration on `dev` of `host`; `qosArgs` are
 * extra arguments to `itmctl load qos`. */
export function markers(
  topo: Topology,
  host: string,
  dev: string,
  qosArgs: string[] = [],
): {
  setup: Record<Config, () => Promise<unknown>>;
  teardown: Record<Config, () => Promise<unknown>>;
} {
  const empty = tcxProgram(topo, host, dev, 'empty.bpf.o', 'empty');
  const hand = tcxProgram(topo, host, dev, 'qos_handwritten.bpf.o', 'qos_handwritten');
  return {
    setup: {
      none: async () => undefined,
      empty: empty.setup,
      hand_qos: hand.setup,
      itm_qos: () => itmctl(topo, host, ['load', 'qos', '--dev', dev, '--hook', 'tc-egress', '--threshold', '100', ...qosArgs]),
      nft: () => topo.exec(host, ['nft', '-f', '-'], { input: NFT }),
      iptables: async () => {
        for (const r of IPT) await topo.exec(host, ['iptables', '-t', 'mangle', '-A', ...r]);
      },
    },
    teardown: {
      none: async () => undefined,
      empty: async () => empty.teardown(),
      hand_qos: async () => hand.teardown(),
      itm_qos: () => itmctl(topo, host, ['down', '--dev', dev]),
      nft: () => topo.exec(host, ['nft', 'delete', 'table', 'ip', 'itmbench']),
      iptables: () => topo.exec(host, ['iptables', '-t', 'mangle', '-F', 'POSTROUTING']),
    },
  };
}

/** An empty list of samples for each of `configs`. */
export function perConfig(configs: readonly Config[]): Record<Config, number[]> {
  return Object.fromEntries(configs.map((c) => [c, []])) as unknown as Record<Config, number[]>;
}

/** Busy CPU time of the whole machine so far, in ns (user, nice, system, irq and softirq). */
export function busyNs(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq] = f;
  return (user! + nice! + system! + irq! + softirq!) * 1e7; // USER_HZ is 100
}

export async function veth(opts: { quick?: boolean } = {}): Promise<Figure[]> {
  buildTools();
  const runs = opts.quick ? 3 : 5;
  const secs = opts.quick ? 1 : 2;
  const topo = await Topology.create({
    hosts: ['a', 'b'],
    links: [{ a: 'a', b: 'b', addrs: { a: ['10.3.0.1/24'], b: ['10.3.0.2/24'] } }],
  });
  cleanItmOnDestroy(topo, 'a');
  const out: Figure[] = [];
  try {
    const dev = topo.dev('a', 'b');
    const sink = topo.dev('b', 'a');
    const rxPackets = await udpSink(topo, 'b', sink);
    await topo.exec('a', ['ping', '-c', '1', '-W', '1', '10.3.0.2'], { check: false });
    // conntrack counts packets only with accounting on (a per-namespace setting; nft loads conntrack)
    await topo.exec('a', ['nft', '-f', '-'], { input: NFT });
    await topo.exec('a', ['nft', 'delete', 'table', 'ip', 'itmbench']);
    await topo.exec('a', ['sysctl', '-qw', 'net.netfilter.nf_conntrack_acct=1']);

    const { setup, teardown } = markers(topo, 'a', dev);
    const configs: Config[] = ['none', 'empty', 'hand_qos', 'itm_qos', 'nft', 'iptables'];
    // each configuration really marks: a new flow's first 100 packets EF, the rest not
    for (const c of configs.filter((x) => x !== 'none' && x !== 'empty')) {
      await setup[c]();
      try {
        const cap = await capture(topo, 'b', { dev: sink, filter: 'udp', snaplen: 64, direction: 'in' });
        await topo.exec('a', [join(TOOLS, 'flood'), '10.3.0.2', '5001', '0.02']);
        await cap.stop(300);
        const pkts = await cap.stop();
        const ef = pkts.filter((p) => p.dscp === 46).length;
        if (Math.abs(ef - 100) > 1 || pkts.length < 150 || pkts.slice(0, ef).some((p) => p.dscp !== 46)) {
          throw new Error(`veth ${c}: the marking is not what it should be (${ef} EF of ${pkts.length} packets)`);
        }
        process.stderr.write(`bench: veth ${c}: marks the first ${ef} of ${pkts.length} packets EF\n`);
      } finally {
        await teardown[c]();
      }
    }
    const pps = perConfig(configs);
    const cpu = perConfig(configs);
    for (let rep = -1; rep < runs; rep++) {
      // rep -1 warms up
      for (const c of configs) {
        await setup[c]();
        try {
          // a new source port each run: a new flow for qos and for conntrack
          const before = await rxPackets();
          const b0 = busyNs();
          const r = await topo.exec('a', ['taskset', '-c', '0', join(TOOLS, 'flood'), '10.3.0.2', '5001', String(secs)]);
          const b1 = busyNs();
          await sleep(100);
          const got = (await rxPackets()) - before;
          const s = Number(/seconds=([\d.]+)/.exec(r.stdout)?.[1] ?? secs);
          if (rep >= 0) {
            pps[c].push(got / s);
            cpu[c].push((b1 - b0) / got);
          }
        } finally {
          await teardown[c]();
        }
      }
    }
    const s = Object.fromEntries(configs.map((c) => [c, summarize(pps[c])])) as Record<Config, ReturnType<typeof summarize>>;
    for (const c of configs) {
      process.stderr.write(
        `bench: veth ${c}: ${pps[c].map((x) => Math.round(x)).join(' ')} pkt/s, ${cpu[c].map((x) => Math.round(x)).join(' ')} CPU ns/pkt\n`,
      );
      out.push(figure(`veth.${c}_pps`, 'pkt/s', s[c], runs, c !== 'none' ? { name: 'veth.none_pps', value: s.none.median } : undefined));
      out.push(figure(`veth.${c}_cpu_ns`, 'CPU ns/pkt', summarize(cpu[c]), runs));
    }
    out.push(ratioFigure('veth.empty_vs_none', s.empty, s.none, 'veth.none_pps', runs));
    out.push(ratioFigure('veth.hand_qos_vs_none', s.hand_qos, s.none, 'veth.none_pps', runs));
    out.push(ratioFigure('veth.qos_vs_none', s.itm_qos, s.none, 'veth.none_pps', runs));
    out.push(ratioFigure('veth.qos_vs_hand_qos', s.itm_qos, s.hand_qos, 'veth.hand_qos_pps', runs));
    out.push(ratioFigure('veth.qos_vs_nft', s.itm_qos, s.nft, 'veth.nft_pps', runs));
    out.push(ratioFigure('veth.qos_vs_iptables', s.itm_qos, s.iptables, 'veth.iptables_pps', runs));

    // TCP bulk: one iperf3 connection a run (a new flow each time), client on CPU 0, server on 1
    const server = topo.spawn('b', ['iperf3', '-s', '-B', '10.3.0.2', '-A', '1', '--forceflush']);
    await server.waitFor(/Server listening/, { timeoutMs: 10_000 });
    const tcpConfigs: Config[] = ['none', 'itm_qos', 'nft', 'iptables'];
    const gbps = perConfig(tcpConfigs);
    const tcpCpu = perConfig(tcpConfigs);
    for (let rep = -1; rep < runs; rep++) {
      for (const c of tcpConfigs) {
        await setup[c]();
        try {
          const b0 = busyNs();
          const r = await topo.exec('a', ['iperf3', '-c', '10.3.0.2', '-A', '0', '-t', String(secs), '-J'], {
            timeoutMs: (secs + 20) * 1000,
          });
          const b1 = busyNs();
          const sum = (JSON.parse(r.stdout) as { end: { sum_received: { bytes: number; seconds: number } } }).end.sum_received;
          if (rep >= 0) {
            gbps[c].push((sum.bytes * 8) / sum.seconds / 1e9);
            tcpCpu[c].push((b1 - b0) / (sum.bytes / 1024));
          }
        } finally {
          await teardown[c]();
        }
      }
    }
    const t = Object.fromEntries(tcpConfigs.map((c) => [c, summarize(gbps[c])])) as Record<Config, ReturnType<typeof summarize>>;
    for (const c of tcpConfigs) {
      process.stderr.write(
        `bench: veth tcp ${c}: ${gbps[c].map((x) => x.toFixed(2)).join(' ')} Gbit/s, ${tcpCpu[c].map((x) => Math.round(x)).join(' ')} CPU ns/KiB\n`,
      );
      out.push(
        figure(`veth.${c}_tcp_gbps`, 'Gbit/s', t[c], runs, c !== 'none' ? { name: 'veth.none_tcp_gbps', value: t.none.median } : undefined),
      );
      out.push(figure(`veth.${c}_tcp_cpu_ns`, 'CPU ns/KiB', summarize(tcpCpu[c]), runs));
    }
    out.push(ratioFigure('veth.qos_vs_none_tcp', t.itm_qos, t.none, 'veth.none_tcp_gbps', runs));
    out.push(ratioFigure('veth.qos_vs_nft_tcp', t.itm_qos, t.nft, 'veth.nft_tcp_gbps', runs));
  } finally {
    await topo.destroy();
  }
  return out;
}
