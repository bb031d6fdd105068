// The control plane: how long itmctl takes to start (`itmctl --version`, and `itmctl list` in a
// namespace with nothing set up) beside a bare `node -e 0`, how long `itmctl load qos` and
// `itmctl unload` take (wall time of the whole command, Node's start included, median of 20), and
// how many packets of a steady stream are lost while a module is loaded and unloaded 100 times on
// its path (it must be none); and how long an `itmctl apply -f` takes that changes nothing, on a
// node with both tc hooks of a device set up and three modules on them.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Topology, startUdpFlow } from '../test/harness/index.js';
import { ITMCTL, cleanItmOnDestroy, clientItmServer, itmctl } from '../test/itm.js';
import { figure, ratioFigure, summarize, type Figure } from './common.js';

export async function control(opts: { quick?: boolean } = {}): Promise<Figure[]> {
  const times = opts.quick ? 5 : 20;
  const cycles = opts.quick ? 20 : 100;
  const starts = opts.quick ? 11 : 21;
  const topo = await Topology.create(clientItmServer());
  cleanItmOnDestroy(topo, 'itm');
  const out: Figure[] = [];
  try {
    // whole processes, interleaved so that the machine's drift falls on all three alike; list
    // runs before anything is set up, so it measures the start, the registry and an empty answer
    const wall = async (argv: string[]) => {
      const t = performance.now();
      await topo.exec('itm', argv);
      return performance.now() - t;
    };
    const node: number[] = [],
      version: number[] = [],
      listing: number[] = [];
    await wall([process.execPath, ITMCTL, 'list']); // the page cache, once
    for (let i = 0; i < starts; i++) {
      node.push(await wall([process.execPath, '-e', '0']));
      version.push(await wall([process.execPath, ITMCTL, '--version']));
      listing.push(await wall([process.execPath, ITMCTL, 'list']));
    }
    const nodeS = summarize(node),
      versionS = summarize(version),
      listS = summarize(listing);
    out.push(figure('control.node_start_ms', 'ms', nodeS, starts));
    out.push(figure('control.cli_start_ms', 'ms', versionS, starts));
    out.push(figure('control.cli_list_ms', 'ms', listS, starts));
    out.push(ratioFigure('control.cli_start_vs_node', versionS, nodeS, 'control.node_start_ms', starts));
    out.push(ratioFigure('control.cli_list_vs_node', listS, nodeS, 'control.node_start_ms', starts));

    const dev = topo.dev('itm', 'server');
    await itmctl(topo, 'itm', ['up', '--dev', dev]);
    const load: number[] = [],
      unload: number[] = [];
    for (let i = 0; i < times; i++) {
      let t = performance.now();
      await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '100']);
      load.push(performance.now() - t);
      t = performance.now();
      await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
      unload.push(performance.now() - t);
    }
    out.push(figure('control.load_ms', 'ms', summarize(load), times));
    out.push(figure('control.unload_ms', 'ms', summarize(unload), times));
    out.push(...(await applyNoop(topo, dev, times)));

    // a stream of sequence-numbered packets through the hook while qos comes and goes
    const flow = await startUdpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, ratePps: 1000 });
    for (let i = 0; i < cycles; i++) {
      await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', '100']);
      await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
    }
    await sleep(200);
    const r = await flow.stop();
    process.stderr.write(
      `bench: control: ${cycles} load/unload cycles, ${r.sent} packets sent, ${r.missing.length} lost, ${r.duplicates} duplicated\n`,
    );
    out.push({
      name: 'control.lost_packets',
      value: r.missing.length,
      unit: 'packets',
      runs: cycles,
      spread: [r.missing.length, r.missing.length],
    });
    out.push({ name: 'control.stream_packets', value: r.sent, unit: 'packets', runs: cycles, spread: [r.sent, r.sent] });
  } finally {
    await topo.destroy();
  }
  return out;
}

/** `itmctl apply -f` of the file the node already matches: the whole command, Node's start, the
 * file's checks against the modules' declarations, the registry's view and the plan included. */
async function applyNoop(topo: Topology, dev: string, times: number): Promise<Figure[]> {
  const file = join(topo.tmpdir, 'node.yaml');
  writeFileSync(
    file,
    `devices:
  ${dev}:
    hooks: [tc-ingress, tc-egress]
    modules:
      - { module: mark, name: ef, priority: 10, interest: 'proto=udp,dport=5001', params: { dscp: ef } }
      - { module: qos, params: { threshold: 100 } }
      - { module: mark, hook: tc-ingress, params: { dscp: af41 } }
`,
  );
  await itmctl(topo, 'itm', ['apply', '-f', file]);
  const noop: number[] = [];
  for (let i = 0; i < times; i++) {
    const t = performance.now();
    const r = await itmctl(topo, 'itm', ['apply', '-f', file]);
    noop.push(performance.now() - t);
    // a figure of an apply that did something would be another figure
    if (!r.stdout.startsWith('nothing to change')) throw new Error(`bench: the second apply changed something: ${r.stdout}`);
  }
  await itmctl(topo, 'itm', ['down', '--dev', dev]);
  return [figure('fleet.apply_noop_ms', 'ms', summarize(noop), times)];
}
