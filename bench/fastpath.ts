// Per-packet cost of the dispatcher, through BPF_PROG_TEST_RUN: an empty tc program (the floor of
// the measurement), then the dispatcher with 0, 1, 4 and 16 modules that do no work (mark with
// DSCP 0 on packets already at 0: classify, log, process and the call each, no rewrite), then the
// dispatcher with qos against a hand-written program doing what they do together. The hook's
// program is relinked at every load (src/registry/compose.ts): the load that makes the chain 16
// long is timed too (control.relink_16_ms).
// Every figure is a median over several runs of many repeats, all in this one process.
import { join } from 'node:path';
import { BpfObject, BpfProgram } from '../src/libbpf/index.js';
import { BPF_BUILD } from '../src/catalog.js';
import { Topology, buildPacket } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl, pinDir } from '../test/itm.js';
import { figure, loadEmpty, measure, measureTurns, ratioFigure, type Figure, type Summary } from './common.js';

export async function fastpath(opts: { quick?: boolean } = {}): Promise<Figure[]> {
  const runs = opts.quick ? 3 : 7;
  const repeat = opts.quick ? 200_000 : 1_000_000;
  // a 60-byte UDP/IPv4 frame, as the spike measured
  const frame = buildPacket({
    family: 4,
    src: '10.1.0.1',
    dst: '10.2.0.2',
    proto: 'udp',
    sport: 1234,
    dport: 5001,
    payload: Buffer.alloc(18),
  });
  const topo = await Topology.create({ hosts: ['itm', 'peer'], links: [{ a: 'itm', b: 'peer' }] });
  cleanItmOnDestroy(topo, 'itm');
  const out: Figure[] = [];
  try {
    const dev = topo.dev('itm', 'peer');
    const empty = loadEmpty();
    const base = measure(empty, frame, runs, repeat);
    empty.close();
    out.push(figure('fastpath.empty_ns', 'ns/pkt', base, runs));
    const vsEmpty = { name: 'fastpath.empty_ns', value: base.median };

    await itmctl(topo, 'itm', ['up', '--dev', dev, '--hook', 'tc-egress']);
    const pin = join(pinDir(topo, 'itm'), String(topo.ifindex('itm', dev)), 'tc-egress', 'dispatch');
    let loaded = 0;
    let relink16 = 0;
    const perCount: Array<[number, number]> = [];
    for (const n of [0, 1, 4, 16]) {
      for (; loaded < n; loaded++) {
        const t0 = performance.now();
        await itmctl(topo, 'itm', ['load', 'mark', '--name', `noop${loaded}`, '--dev', dev, '--hook', 'tc-egress', '--dscp', '0']);
        if (loaded === 15) relink16 = performance.now() - t0;
      }
      // each load put a new program on the hook
      const dispatch = BpfProgram.fromPin(pin);
      const m = measure(dispatch, frame, runs, repeat);
      dispatch.close();
      perCount.push([n, m.median]);
      out.push(figure(`fastpath.dispatcher_${n}_ns`, 'ns/pkt', m, runs, vsEmpty));
    }
    out.push({ name: 'control.relink_16_ms', value: relink16, unit: 'ms', runs: 1, spread: [relink16, relink16] });
    // least-squares slope of cost against the number of modules
    const xs = perCount.map(([n]) => n),
      ys = perCount.map(([, v]) => v);
    const mx = xs.reduce((a, b) => a + b) / xs.length,
      my = ys.reduce((a, b) => a + b) / ys.length;
    const slope = xs.reduce((a, x, i) => a + (x - mx) * (ys[i]! - my), 0) / xs.reduce((a, x) => a + (x - mx) ** 2, 0);
    out.push({ name: 'fastpath.per_module_ns', value: slope, unit: 'ns/module', runs, spread: [slope, slope] });
    await itmctl(topo, 'itm', ['down', '--dev', dev]);

    // qos through the dispatcher, against one hand-written program doing the same work (the
    // floor of this design); one flow, past its threshold, as most packets of a long flow are
    // (their runs take turns, so that what drifts falls on both)
    await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--hook', 'tc-egress', '--threshold', '100']);
    const withQos = BpfProgram.fromPin(join(pinDir(topo, 'itm'), String(topo.ifindex('itm', dev)), 'tc-egress', 'dispatch'));
    const handObj = BpfObject.open(join(BPF_BUILD, 'bench', 'qos_handwritten.bpf.o'));
    let hand: BpfProgram;
    try {
      handObj.load();
      hand = handObj.program('qos_handwritten');
    } finally {
      handObj.close();
    }
    const [q, h] = measureTurns([withQos, hand], frame, 2 * runs + 1, repeat) as [Summary, Summary];
    withQos.close();
    hand.close();
    await itmctl(topo, 'itm', ['down', '--dev', dev]);
    out.push(figure('fastpath.qos_ns', 'ns/pkt', q, 2 * runs + 1, vsEmpty));
    out.push(figure('fastpath.handwritten_qos_ns', 'ns/pkt', h, 2 * runs + 1, vsEmpty));
    out.push(ratioFigure('fastpath.qos_vs_handwritten', q, h, 'fastpath.handwritten_qos_ns', 2 * runs + 1));
  } finally {
    await topo.destroy();
  }
  return out;
}
