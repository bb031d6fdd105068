// The route overlay's data path, on the paths real machines have (offloads as the kernel sets
// them), TCP bulk throughput (iperf3), all in one run and taking turns:
//
// - the gateway placement (itmBench's): a client C behind A and a server S behind B, in
//   namespaces of their own, A and B forwarding between them and the overlay. C → S over the plain
//   A — B link without itm, once with GSO end to end and once with MTU-sized packets (C's TSO and
//   GSO off, as a real wire carries them), then through the overlay (A encapsulates, N1 checks and
//   relays, B checks and decapsulates), in the kernel and with --datapath user on every node;
// - the host placement: A's own client to B's own server, plain and through the overlay;
// - the side traffic: A's own TCP to an address outside the overlay, out of route's device, with
//   route loaded against before it (taking turns: route loaded and unloaded on every node in
//   between): with only A's control plane running, as on A's own machine (the other nodes' run
//   beside it here, on the same two CPUs), and with all four; and the same with its client and
//   server on one CPU, where a veth does not reorder the flow between two CPUs' backlogs.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Topology } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl } from '../test/itm.js';
import { CLIENT, GW_SERVER, OVERLAY_HOSTS, SERVER, loadOverlay, overlayDecl, pathsWhen, plainRoutes } from '../test/overlay.js';
import { figure, ratioFigure, summarize, type Figure } from './common.js';

export async function routeBench(o: { quick: boolean }): Promise<Figure[]> {
  const runs = o.quick ? 3 : 5;
  // the side traffic's turns: its effect is a few per cent, the run-to-run spread as large
  const sideRuns = o.quick ? 3 : 8;
  const secs = o.quick ? 1 : 2;
  const topo = await Topology.create(overlayDecl({ gateway: true }));
  cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
  const dir = mkdtempSync(join(tmpdir(), 'itm-bench-route-'));
  // one iperf3 connection a run (a new flow each time), the client on CPU 0, the server on 1;
  // B's second server, on CPU 0 with its client, is for the side traffic on one CPU
  const ONE_CPU_PORT = '5202';
  const servers = [
    topo.spawn('s', ['iperf3', '-s', '-A', '1', '--forceflush']),
    topo.spawn('b', ['iperf3', '-s', '-A', '1', '--forceflush']),
    topo.spawn('b', ['iperf3', '-s', '-p', ONE_CPU_PORT, '-A', '0', '--forceflush']),
  ];
  const mbit = async (from: 'a' | 'c', to: string, src?: string, port?: string) => {
    const args = ['iperf3', '-c', to, ...(src ? ['-B', src] : []), ...(port ? ['-p', port] : []), '-A', '0', '-t', String(secs), '-J'];
    const r = await topo.exec(from, args, { timeoutMs: (secs + 30) * 1000 });
    const sum = (JSON.parse(r.stdout) as { end: { sum_received: { bytes: number; seconds: number } } }).end.sum_received;
    return (sum.bytes * 8) / sum.seconds / 1e6;
  };
  const gateway = () => mbit('c', GW_SERVER);
  const host = () => mbit('a', SERVER, CLIENT);
  // B's underlay address on the A — B link: no destination of the overlay
  const side = () => mbit('a', '10.31.5.2', '10.31.5.1');
  const sideOneCpu = () => mbit('a', '10.31.5.2', '10.31.5.1', ONE_CPU_PORT);
  const ethtool = (h: string, dev: string, ...kv: string[]) => topo.exec(h, ['ethtool', '-K', dev, ...kv]);
  /** C's frames as a real wire carries them: one MTU each (no TSO, no GSO at C, no GRO at A) */
  const mtuSized = async <T>(fn: () => Promise<T>): Promise<T> => {
    await ethtool('c', topo.dev('c', 'a'), 'tso', 'off', 'gso', 'off');
    try {
      return await fn();
    } finally {
      await ethtool('c', topo.dev('c', 'a'), 'tso', 'on', 'gso', 'on');
    }
  };
  /** A's own TCP over the plain link one segment per packet (TSO and GSO off on A's device) */
  const oneSegment = async <T>(fn: () => Promise<T>): Promise<T> => {
    await ethtool('a', topo.dev('a', 'b'), 'tso', 'off', 'gso', 'off');
    try {
      return await fn();
    } finally {
      await ethtool('a', topo.dev('a', 'b'), 'tso', 'on', 'gso', 'on');
    }
  };
  const alive = () => pathsWhen(topo, 'a', (v) => v.destinations.every((d) => d.paths.some((p) => p.alive)));
  const overlayUp = async (args: string[] = []) => {
    await loadOverlay(topo, dir, { gateway: true }, args);
    await alive();
  };
  /** every node as before route: no itm on any device, no agent */
  const overlayDown = async () => {
    for (const h of OVERLAY_HOSTS) {
      for (const dev of topo.devs(h)) await itmctl(topo, h, ['down', '--dev', dev.dev]);
      await itmctl(topo, h, ['agent', 'stop']);
    }
  };
  try {
    await plainRoutes(topo);
    for (const srv of servers) await srv.waitFor(/Server listening/, { timeoutMs: 10_000 });
    const f = {
      plainGso: [] as number[],
      plainMtu: [] as number[],
      direct: [] as number[],
      nogso: [] as number[],
      sideBefore: [] as number[],
      kernel: [] as number[],
      hostKernel: [] as number[],
      sideAfter: [] as number[],
      sideAllAgents: [] as number[],
      sideOneBefore: [] as number[],
      sideOneAfter: [] as number[],
      user: [] as number[],
      hostUser: [] as number[],
    };
    await gateway(); // warm up
    for (let i = 0; i < runs; i++) {
      f.plainGso.push(await gateway());
      f.plainMtu.push(await mtuSized(gateway));
      f.direct.push(await host());
      f.nogso.push(await oneSegment(host));
    }
    await overlayUp();
    for (let i = 0; i < runs; i++) {
      f.kernel.push(await gateway());
      f.hostKernel.push(await host());
      f.sideAllAgents.push(await side());
    }
    // the side traffic as A's own machine has it: the other nodes' control planes (which run
    // beside A here, on the same two CPUs) stopped; their data paths, and A's agent, run on. Before
    // route and with it take turns (with, down, before; before, up, with; ...), so that the
    // machine's drift between runs, as large as the effect measured, falls on both alike.
    const othersStopped = async () => {
      for (const h of ['n1', 'n2', 'b']) await itmctl(topo, h, ['agent', 'stop']);
      await sleep(1000);
    };
    const sideWith = async () => {
      f.sideAfter.push(await side());
      f.sideOneAfter.push(await sideOneCpu());
    };
    const sideWithout = async () => {
      f.sideBefore.push(await side());
      f.sideOneBefore.push(await sideOneCpu());
    };
    await othersStopped();
    let up = true;
    for (let i = 0; i < sideRuns; i++) {
      if (i % 2 === 0) {
        await sideWith();
        await overlayDown();
        up = false;
        await sideWithout();
      } else {
        await sideWithout();
        await overlayUp();
        await othersStopped();
        up = true;
        await sideWith();
      }
    }
    // the same overlay with the user data path on every node (a node's instances go together)
    if (up) await overlayDown();
    await overlayUp(['--datapath', 'user']);
    for (let i = 0; i < runs; i++) {
      f.user.push(await gateway());
      f.hostUser.push(await host());
    }
    const s = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, summarize(v)])) as Record<
      keyof typeof f,
      ReturnType<typeof summarize>
    >;
    const base = (name: string, k: keyof typeof f) => ({ name, value: s[k].median });
    return [
      figure('route.gateway_plain_gso_mbit', 'Mbit/s', s.plainGso, runs),
      figure('route.gateway_plain_mtu_mbit', 'Mbit/s', s.plainMtu, runs, base('route.gateway_plain_gso_mbit', 'plainGso')),
      figure('route.gateway_kernel_mbit', 'Mbit/s', s.kernel, runs, base('route.gateway_plain_mtu_mbit', 'plainMtu')),
      ratioFigure('route.gateway_kernel_vs_plain_mtu', s.kernel, s.plainMtu, 'route.gateway_plain_mtu_mbit', runs),
      figure('route.gateway_user_mbit', 'Mbit/s', s.user, runs, base('route.gateway_kernel_mbit', 'kernel')),
      ratioFigure('route.gateway_user_vs_kernel', s.user, s.kernel, 'route.gateway_kernel_mbit', runs),
      figure('route.side_before_mbit', 'Mbit/s', s.sideBefore, sideRuns),
      figure('route.side_after_mbit', 'Mbit/s', s.sideAfter, sideRuns, base('route.side_before_mbit', 'sideBefore')),
      ratioFigure('route.side_traffic_ratio', s.sideAfter, s.sideBefore, 'route.side_before_mbit', sideRuns),
      figure('route.side_one_cpu_before_mbit', 'Mbit/s', s.sideOneBefore, sideRuns),
      figure('route.side_one_cpu_after_mbit', 'Mbit/s', s.sideOneAfter, sideRuns, base('route.side_one_cpu_before_mbit', 'sideOneBefore')),
      ratioFigure('route.side_one_cpu_ratio', s.sideOneAfter, s.sideOneBefore, 'route.side_one_cpu_before_mbit', sideRuns),
      figure('route.side_after_all_agents_mbit', 'Mbit/s', s.sideAllAgents, runs, base('route.side_before_mbit', 'sideBefore')),
      figure('route.direct_tcp_mbit', 'Mbit/s', s.direct, runs),
      figure('route.direct_nogso_tcp_mbit', 'Mbit/s', s.nogso, runs, base('route.direct_tcp_mbit', 'direct')),
      figure('route.kernel_tcp_mbit', 'Mbit/s', s.hostKernel, runs, base('route.direct_tcp_mbit', 'direct')),
      ratioFigure('route.kernel_vs_nogso', s.hostKernel, s.nogso, 'route.direct_nogso_tcp_mbit', runs),
      figure('route.user_tcp_mbit', 'Mbit/s', s.hostUser, runs, base('route.kernel_tcp_mbit', 'hostKernel')),
      ratioFigure('route.user_vs_kernel', s.hostUser, s.hostKernel, 'route.kernel_tcp_mbit', runs),
    ];
  } finally {
    for (const srv of servers) await srv.stop(1000);
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}
