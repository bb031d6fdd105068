// The route overlay's data path: TCP bulk throughput from A's client to B's server through the
// overlay (encapsulated at A, checked and relayed at N1, checked and decapsulated at B), in the
// kernel and then with --datapath user on every node (the same work in TypeScript over AF_XDP),
// against the same transfer over the plain A — B link, with GSO (the baseline) and with one segment
// per packet (what route sets on its devices, since a tag cannot be made per segment).
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
  const topo = await Topology.create(overlayDecl());
  cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
  const dir = mkdtempSync(join(tmpdir(), 'itm-bench-route-'));
  let port = 7100;
  const mbit = async (src: string, dst: string) => {
    const r = await tcpTransfer(topo, { from: 'a', to: 'b', family: 4, dport: port++, bytes: BYTES, srcAddr: src, dstAddr: dst });
    return (r.bytes * 8) / (r.ms * 1000);
  };
  try {
    await plainRoutes(topo);
    const direct: number[] = [], nogso: number[] = [], kernel: number[] = [], user: number[] = [];
    for (let i = 0; i < runs; i++) direct.push(await mbit(CLIENT, SERVER));
    await loadOverlay(topo, dir, {});
    // the probes have found the paths
    await pathsWhen(topo, 'a', (v) => v.destinations.every((d) => d.paths.some((p) => p.alive)));
    // taking turns: the plain link's addresses are not the overlay's destinations, and its
    // devices now send one segment per packet, as route set them
    for (let i = 0; i < runs; i++) {
      nogso.push(await mbit('10.31.5.1', '10.31.5.2'));
      kernel.push(await mbit(CLIENT, SERVER));
    }
    // the same overlay with the user data path on every node (a node's instances go together)
    for (const host of OVERLAY_HOSTS) for (const dev of topo.devs(host)) await itmctl(topo, host, ['unload', 'route', '--dev', dev.dev]);
    await loadOverlay(topo, dir, {}, ['--datapath', 'user']);
    await pathsWhen(topo, 'a', (v) => v.destinations.every((d) => d.paths.some((p) => p.alive)));
    for (let i = 0; i < runs; i++) user.push(await mbit(CLIENT, SERVER));
    const d = summarize(direct), n = summarize(nogso), k = summarize(kernel), u = summarize(user);
    return [
      figure('route.direct_tcp_mbit', 'Mbit/s', d, runs),
      figure('route.direct_nogso_tcp_mbit', 'Mbit/s', n, runs, { name: 'route.direct_tcp_mbit', value: d.median }),
      figure('route.kernel_tcp_mbit', 'Mbit/s', k, runs, { name: 'route.direct_tcp_mbit', value: d.median }),
      ratioFigure('route.kernel_vs_nogso', k, n, 'route.direct_nogso_tcp_mbit', runs),
      figure('route.user_tcp_mbit', 'Mbit/s', u, runs, { name: 'route.kernel_tcp_mbit', value: k.median }),
      ratioFigure('route.user_vs_kernel', u, k, 'route.kernel_tcp_mbit', runs),
    ];
  } finally {
    await topo.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}
