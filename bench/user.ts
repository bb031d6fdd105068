// The user-space path: how many packets a second get through a no-op TypeScript module over AF_XDP
// (itmd's host), next to, on the same traffic in the same run, the same path served by a minimal C
// AF_XDP consumer (bench/tools/xsk_floor.c: the floor of this design) and the plain path with no
// diversion (the limit of this machine). 64-byte UDP frames from one sendmmsg sender on CPU 0,
// client — itm — server; delivered packets are counted at the server's device and dropped there by
// tc, so that no receiving socket sets the pace. The sender runs on CPU 0, the module's host (or
// the C consumer) on CPU 1. Through a module, the figure is the packets that came back from it
// (the dispatcher's count): what bypassed it while it was behind (fail open) is not counted.
// Last, TCP bulk through a no-op TypeScript module against none (user.ts_tcp_gbps).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT } from '../src/catalog.js';
import * as abi from '../src/abi.js';
import { BpfMap } from '../src/libbpf/index.js';
import type { DeviceView } from '../src/registry/index.js';
import { Topology } from '../test/harness/index.js';
import { ITMCTL, cleanItmOnDestroy, clientItmServer, itmctl, itmctlJson, pinDir } from '../test/itm.js';
import { figure, ratioFigure, summarize, udpSink, type Figure, type Summary } from './common.js';

export const TOOLS = join(ROOT, 'bench', 'build');

/** Builds the C tools when their source is newer than the binary. */
export function buildTools(): void {
  mkdirSync(TOOLS, { recursive: true });
  const tools: Array<[string, string[]]> = [
    ['flood', []],
    ['xsk_floor', [`-I${join(ROOT, 'bpf', 'include')}`, '-lxdp', '-lbpf']],
    ['nfq', ['-lnetfilter_queue']],
  ];
  for (const [name, flags] of tools) {
    const src = join(ROOT, 'bench', 'tools', `${name}.c`);
    const bin = join(TOOLS, name);
    if (existsSync(bin) && statSync(bin).mtimeMs > statSync(src).mtimeMs) continue;
    const libs = flags.filter((f) => f.startsWith('-l'));
    const r = spawnSync('cc', ['-O2', '-Wall', ...flags.filter((f) => !f.startsWith('-l')), '-o', bin, src, ...libs], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`cannot build ${name}: ${r.stderr || r.error?.message}`);
  }
}

export async function userPath(opts: { quick?: boolean } = {}): Promise<Figure[]> {
  buildTools();
  const runs = opts.quick ? 3 : 5;
  const secs = opts.quick ? 1 : 2;
  const topo = await Topology.create(clientItmServer());
  cleanItmOnDestroy(topo, 'itm');
  const out: Figure[] = [];
  try {
    const srv = topo.dev('server', 'itm');
    const rxPackets = await udpSink(topo, 'server', srv);
    await topo.exec('client', ['ping', '-c', '1', '-W', '1', '10.2.0.2'], { check: false }); // neighbours resolved

    /** Packets a second for one run of the sender: delivered at the server, or, with `back`
     * (the count of packets back from a user module), those that went through the module (the
     * rest bypassed it when it fell behind: fail open). */
    const once = async (back?: () => number): Promise<number> => {
      const before = back ? back() : await rxPackets();
      const r = await topo.exec('client', ['taskset', '-c', '0', join(TOOLS, 'flood'), '10.2.0.2', '5001', String(secs)]);
      const m = /seconds=([\d.]+)/.exec(r.stdout);
      await sleep(100); // the last packets in flight
      return ((back ? back() : await rxPackets()) - before) / Number(m?.[1] ?? secs);
    };
    const series = async (label: string, back?: () => number): Promise<Summary> => {
      await once(back); // warm up
      const xs: number[] = [];
      for (let i = 0; i < runs; i++) xs.push(await once(back));
      process.stderr.write(`bench: ${label}: ${xs.map((x) => Math.round(x)).join(' ')} pkt/s\n`);
      return summarize(xs);
    };

    const plain = await series('plain path');
    out.push(figure('user.plain_pps', 'pkt/s', plain, runs));
    const vsPlain = { name: 'user.plain_pps', value: plain.median };

    // NFQUEUE on the same forwarded traffic, at the same place as tc-egress (mangle FORWARD)
    const nfq: Record<string, Summary> = {};
    for (const mode of ['single', 'batch'] as const) {
      const rule = ['FORWARD', '-p', 'udp', '--dport', '5001', '-j', 'NFQUEUE', '--queue-num', '0'];
      await topo.exec('itm', ['iptables', '-t', 'mangle', '-A', ...rule]);
      const consumer = topo.spawn('itm', ['taskset', '-c', '1', join(TOOLS, 'nfq'), '0', '600', mode]);
      try {
        await consumer.waitFor('ready', { timeoutMs: 5000 });
        nfq[mode] = await series(`NFQUEUE, ${mode === 'single' ? 'one verdict per packet' : 'batched verdicts'}`);
      } finally {
        await consumer.stop(2000);
        await topo.exec('itm', ['iptables', '-t', 'mangle', '-D', ...rule]);
      }
    }
    out.push(figure('user.nfqueue_pps', 'pkt/s', nfq.single!, runs, vsPlain));
    out.push(figure('user.nfqueue_batch_pps', 'pkt/s', nfq.batch!, runs, vsPlain));
    const noop = join(ROOT, 'dist', 'bench', 'modules', 'noop.js');
    for (const hook of ['tc-egress', 'xdp'] as const) {
      // tc-egress on the way out to the server; xdp on the way in from the client
      const dev = hook === 'xdp' ? topo.dev('itm', 'client') : topo.dev('itm', 'server');
      // the sender has CPU 0; the agent, and so the module's host, CPU 1, as the C consumer will
      await topo.exec('itm', ['taskset', '-c', '1', process.execPath, ITMCTL, 'agent', 'start']);
      await itmctl(topo, 'itm', ['load', noop, '--dev', dev, '--hook', hook, '--interest', 'proto=udp,dport=5001']);
      const view = async () =>
        (await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', dev]))[0]!.hooks.find((h) => h.hook === hook)!.modules[0]!;
      for (let i = 0; i < 50 && !(await view()).user?.serving; i++) await sleep(100);
      const m = await view();
      const ifindex = topo.ifindex('itm', dev);
      const hookDir = join(pinDir(topo, 'itm'), String(ifindex), hook);
      const uflight = BpfMap.fromPin(join(hookDir, 'itm_uflight'));
      const back = () => Number(abi.decode<abi.ItmUflight>(abi.itm_uflight, uflight.lookup(abi.u32(m.id))!).back);
      const ts = await series(`TypeScript no-op at ${hook}, through the module`, back);
      process.stderr.write(`bench: ${hook}: ${JSON.stringify((await view()).user)}\n`);
      // the C floor takes the same slot: the agent (and the module's host) goes first
      await itmctl(topo, 'itm', ['agent', 'stop']);
      const pair = `itm${ifindex}${hook === 'xdp' ? 'x' : 'e'}${m.id}b`;
      const floor = topo.spawn('itm', [
        'taskset',
        '-c',
        '1',
        join(TOOLS, 'xsk_floor'),
        pair,
        hookDir,
        String(m.id),
        '600',
        ...(hook === 'xdp' ? ['front'] : []),
      ]);
      let c;
      try {
        await sleep(300);
        if (!floor.running) throw new Error(`xsk_floor ended: ${floor.result().stderr}`);
        c = await series(`C AF_XDP floor at ${hook}, through the consumer`, back);
        process.stderr.write(`bench: ${hook}: ${JSON.stringify((await view()).user?.bypassed)}\n`);
      } finally {
        await floor.stop(2000);
        uflight.close();
      }
      await itmctl(topo, 'itm', ['unload', m.name, '--dev', dev, '--hook', hook]);
      const tag = hook === 'xdp' ? '_xdp' : '';
      out.push(figure(`user.ts${tag}_pps`, 'pkt/s', ts, runs, vsPlain));
      out.push(figure(`user.c_afxdp${tag}_pps`, 'pkt/s', c, runs, vsPlain));
      out.push(ratioFigure(`user.ts_vs_c_afxdp${tag}`, ts, c, `user.c_afxdp${tag}_pps`, runs));
      if (hook === 'tc-egress') out.push(ratioFigure('user.ts_vs_nfqueue', ts, nfq.single!, 'user.nfqueue_pps', runs));
    }

    // TCP bulk through a no-op TypeScript module at tc-egress, against none, taking turns: one
    // iperf3 connection a run, client on CPU 0, server on 1. Offloads are the kernel's: the
    // client's TSO super-packets cross the veth whole, and the dispatcher cuts them into their
    // segments for the module (and only the packets the module sends back count, as above).
    const dev = topo.dev('itm', 'server');
    // the xdp dispatcher left from the runs above would take GSO from the client's device (a veth
    // whose peer has XDP sends one segment per packet): off with it
    await itmctl(topo, 'itm', ['down', '--dev', topo.dev('itm', 'client')]);
    const server = topo.spawn('server', ['iperf3', '-s', '-B', '10.2.0.2', '-A', '1', '--forceflush']);
    await server.waitFor(/Server listening/, { timeoutMs: 10_000 });
    const tcpOnce = async () => {
      const r = await topo.exec('client', ['iperf3', '-c', '10.2.0.2', '-A', '0', '-t', String(secs), '-J'], {
        timeoutMs: (secs + 20) * 1000,
      });
      const sum = (JSON.parse(r.stdout) as { end: { sum_received: { bytes: number; seconds: number } } }).end.sum_received;
      return (sum.bytes * 8) / sum.seconds / 1e9;
    };
    await topo.exec('itm', ['taskset', '-c', '1', process.execPath, ITMCTL, 'agent', 'start']);
    const tcp = { plain: [] as number[], ts: [] as number[] };
    for (let rep = -1; rep < runs; rep++) {
      const p = await tcpOnce();
      await itmctl(topo, 'itm', ['load', noop, '--dev', dev, '--hook', 'tc-egress', '--interest', 'proto=tcp,dport=5201']);
      const view = async () =>
        (await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', dev]))[0]!.hooks.find((h) => h.hook === 'tc-egress')!.modules[0]!;
      for (let i = 0; i < 50 && !(await view()).user?.serving; i++) await sleep(100);
      const t = await tcpOnce();
      const u = (await view()).user!;
      await itmctl(topo, 'itm', ['unload', 'noop', '--dev', dev, '--hook', 'tc-egress']);
      if (rep < 0) continue;
      tcp.plain.push(p);
      tcp.ts.push(t);
      process.stderr.write(
        `bench: TCP plain ${p.toFixed(2)}, through the TypeScript no-op ${t.toFixed(2)} Gbit/s; bypassed ${JSON.stringify(u.bypassed)}\n`,
      );
    }
    await server.stop(1000);
    const tp = summarize(tcp.plain),
      tt = summarize(tcp.ts);
    out.push(figure('user.plain_tcp_gbps', 'Gbit/s', tp, runs));
    out.push(figure('user.ts_tcp_gbps', 'Gbit/s', tt, runs, { name: 'user.plain_tcp_gbps', value: tp.median }));
    out.push(ratioFigure('user.ts_tcp_vs_plain', tt, tp, 'user.plain_tcp_gbps', runs));
  } finally {
    await topo.destroy();
  }
  return out;
}
