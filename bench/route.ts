// The route overlay's data path, on the paths real machines have (offloads as the kernel sets
// them), TCP bulk throughput, all in one run and taking turns:
//
// - the gateway placement (itmBench's): a client C behind A and a server S behind B, in
//   namespaces of their own, A and B forwarding between them and the overlay. C → S over the plain
//   A — B link without itm, once with GSO end to end and once with MTU-sized packets (C's TSO and
//   GSO off, as a real wire carries them), then through the overlay (A encapsulates, N1 checks and
//   relays, B checks and decapsulates), in the kernel and with --datapath user on every node;
// - the host placement: A's own client to B's own server, plain and through the overlay;
// - the side traffic: A's own TCP to an address outside the overlay, out of route's device, with
//   route loaded against before it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Topology, tcpTransfer } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl } from '../test/itm.js';
import { CLIENT, OVERLAY_HOSTS, SERVER, loadOverlay, overlayDecl, pathsWhen, plainRoutes } from '../test/overlay.js';
import { figure, ratioFigure, summarize, type Figure } from './common.js';

const BYTES = 50_000_000;

export async function routeBench(o: { quick: boolean }): Promise<Figure[]> {
  const runs = o.quick ? 3 : 5;
  const topo = await Topology.create(overlayDecl({ gateway: true }));
  cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
  const dir = mkdtempSync(join(tmpdir(), 'itm-bench-route-'));
  let port = 7100;
  const mbit = async (from: 'a' | 'c', to: 'b' | 's', src?: string, dst?: string) => {
    const r = await tcpTransfer(topo, { from, to, family: 4, dport: port++, bytes: BYTES, ...(src ? { srcAddr: src, dstAddr: dst } : {}), timeoutMs: 120_000 });
    return (r.bytes * 8) / (r.ms * 1000);
  };
  const gateway = () => mbit('c', 's');
  const host = () => mbit('a', 'b', CLIENT, SERVER);
  // B's underlay address on the A — B link: no destination of the overlay
  const side = () => mbit('a', 'b', '10.31.5.1', '10.31.5.2');
  const ethtool = (h: string, dev: string, ...kv: string[]) => topo.exec(h, ['ethtool', '-K', dev, ...kv]);
  /** C's frames as a real wire carries them: one MTU each (no TSO, no GSO at C, no GRO at A) */
  const mtuSized = async <T>(fn: () => Promise<T>): Promise<T> => {
    await ethtool('c', topo.dev('c', 'a'), 'tso', 'off', 'gso', 'off');
    try { return await fn(); } finally { await ethtool('c', topo.dev('c', 'a'), 'tso', 'on', 'gso', 'on'); }
  };
  /** A's own TCP over the plain link one segment per packet (TSO and GSO off on A's device) */
  const oneSegment = async <T>(fn: () => Promise<T>): Promise<T> => {
    await ethtool('a', topo.dev('a', 'b'), 'tso', 'off', 'gso', 'off');
    try { return await fn(); } finally { await ethtool('a', topo.dev('a', 'b'), 'tso', 'on', 'gso', 'on'); }
  };
  const alive = () => pathsWhen(topo, 'a', (v) => v.destinations.every((d) => d.paths.some((p) => p.alive)));
  try {
    await plainRoutes(topo);
    const f = { plainGso: [] as number[], plainMtu: [] as number[], direct: [] as number[], nogso: [] as number[], sideBefore: [] as number[],
      kernel: [] as number[], hostKernel: [] as number[], sideAfter: [] as number[], user: [] as number[], hostUser: [] as number[] };
    for (let i = 0; i < runs; i++) {
      f.plainGso.push(await gateway());
      f.plainMtu.push(await mtuSized(gateway));
      f.direct.push(await host());
      f.nogso.push(await oneSegment(host));
      f.sideBefore.push(await side());
    }
    await loadOverlay(topo, dir, { gateway: true });
    await alive();
    for (let i = 0; i < runs; i++) {
      f.kernel.push(await gateway());
      f.hostKernel.push(await host());
      f.sideAfter.push(await side());
    }
    // the same overlay with the user data path on every node (a node's instances go together)
    for (const h of OVERLAY_HOSTS) for (const dev of topo.devs(h)) await itmctl(topo, h, ['unload', 'route', '--dev', dev.dev]);
    await loadOverlay(topo, dir, { gateway: true }, ['--datapath', 'user']);
    await alive();
    for (let i = 0; i < runs; i++) {
      f.user.push(await gateway());
      f.hostUser.push(await host());
    }
    const s = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, summarize(v)])) as Record<keyof typeof f, ReturnType<typeof summarize>>;
    const base = (name: string, k: keyof typeof f) => ({ name, value: s[k].median });
    return [
      figure('route.gateway_plain_gso_mbit', 'Mbit/s', s.plainGso, runs),
      figure('route.gateway_plain_mtu_mbit', 'Mbit/s', s.plainMtu, runs, base('route.gateway_plain_gso_mbit', 'plainGso')),
      figure('route.gateway_kernel_mbit', 'Mbit/s', s.kernel, runs, base('route.gateway_plain_mtu_mbit', 'plainMtu')),
      ratioFigure('route.gateway_kernel_vs_plain_mtu', s.kernel, s.plainMtu, 'route.gateway_plain_mtu_mbit', runs),
      figure('route.gateway_user_mbit', 'Mbit/s', s.user, runs, base('route.gateway_kernel_mbit', 'kernel')),
      ratioFigure('route.gateway_user_vs_kernel', s.user, s.kernel, 'route.gateway_kernel_mbit', runs),
      figure('route.side_before_mbit', 'Mbit/s', s.sideBefore, runs),
      figure('route.side_after_mbit', 'Mbit/s', s.sideAfter, runs, base('route.side_before_mbit', 'sideBefore')),
      ratioFigure('route.side_traffic_ratio', s.sideAfter, s.sideBefore, 'route.side_before_mbit', runs),
      figure('route.direct_tcp_mbit', 'Mbit/s', s.direct, runs),
      figure('route.direct_nogso_tcp_mbit', 'Mbit/s', s.nogso, runs, base('route.direct_tcp_mbit', 'direct')),
      figure('route.kernel_tcp_mbit', 'Mbit/s', s.hostKernel, runs, base('route.direct_tcp_mbit', 'direct')),
      ratioFigure('route.kernel_vs_nogso', s.hostKernel, s.nogso, 'route.direct_nogso_tcp_mbit', runs),
      figure('route.user_tcp_mbit', 'Mbit/s', s.hostUser, runs, base('route.kernel_tcp_mbit', 'hostKernel')),
      ratioFigure('route.user_vs_kernel', s.hostUser, s.hostKernel, 'route.kernel_tcp_mbit', runs),
    ];
  } finally {
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}
