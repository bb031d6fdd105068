// The qos demo: mice and elephants through a bottleneck that serves DSCP classes by priority.
//
//   client — itm — router — server
//
// The router's link to the server is the bottleneck: HTB at 20 Mbit/s whose priority class takes
// packets marked EF (a u32 filter on the DSCP: there is no prio qdisc here). Three long TCP uploads fill it while short requests (8 KB each)
// run; each request's completion time is measured, with qos off and on, over several runs.
// Offloads are as the kernel sets them on every device, and GRO on at the ITM as on a NIC, so the
// ITM's tc-egress sees TCP as super-packets (qos counts their segments); only the bottleneck sends
// MTU-sized frames, as a slow real link carries them.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Topology, type NsProcess, type TopologyDecl } from '../test/harness/index.js';
import { cleanItmOnDestroy, itmctl } from '../test/itm.js';

const here = dirname(fileURLToPath(import.meta.url));
const AGENT = join(here, 'fct-agent.js');
const RESULTS = resolve(here, '..', '..', 'demo', 'results');

/** the span over which the long flows' throughput is measured, from the start of the requests */
const WINDOW_MS = 4000;

export interface QosDemoOptions {
  runs: number;
  requests: number;
  size: number;
  bulkFlows: number;
  threshold: number;
  rateMbit: number;
}
export const QOS_DEFAULTS: QosDemoOptions = { runs: 3, requests: 60, size: 8 * 1024, bulkFlows: 3, threshold: 20, rateMbit: 20 };

const topology: TopologyDecl = {
  hosts: ['client', 'itm', 'router', 'server'],
  links: [
    { a: 'client', b: 'itm', addrs: { client: ['10.1.0.1/24'], itm: ['10.1.0.2/24'] } },
    { a: 'itm', b: 'router', addrs: { itm: ['10.3.0.1/24'], router: ['10.3.0.2/24'] } },
    { a: 'router', b: 'server', addrs: { router: ['10.2.0.1/24'], server: ['10.2.0.2/24'] } },
  ],
  routes: {
    client: ['default via 10.1.0.2'],
    itm: ['10.2.0.0/24 via 10.3.0.2'],
    router: ['10.1.0.0/24 via 10.3.0.1'],
    server: ['default via 10.2.0.1'],
  },
  forwarding: ['itm', 'router'],
};

interface Event {
  ev: string;
  [k: string]: unknown;
}
async function next(p: NsProcess, ev: string, timeoutMs: number): Promise<Event> {
  const { line } = await p.waitForLine(
    (l) => {
      try {
        const e = (JSON.parse(l) as Event).ev;
        return e === ev || e === 'error';
      } catch {
        return false;
      }
    },
    { timeoutMs, from: 0 },
  );
  const e = JSON.parse(line) as Event;
  if (e.ev === 'error') throw new Error(`demo agent: ${String(e.message)}`);
  return e;
}

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
};
const median = (xs: number[]) => quantile(xs, 0.5);

export interface ModeResult {
  mean: number;
  p50: number;
  p99: number;
  bulkMbit: number;
  fct: number[];
}

export async function qosDemo(
  o: QosDemoOptions,
  say: (s?: string) => void,
): Promise<{ off: ModeResult[]; on: ModeResult[]; file: string; chart: string }> {
  say(`qos: client — itm — router — server; the router's link to the server is ${o.rateMbit} Mbit/s, EF first`);
  const topo = await Topology.create(topology);
  cleanItmOnDestroy(topo, 'itm');
  try {
    // the bottleneck: HTB whose class 1:10 (priority 0) takes EF, the rest (1:20) waits
    const bdev = topo.dev('router', 'server');
    const rate = `${o.rateMbit}mbit`;
    for (const cmd of [
      ['qdisc', 'add', 'dev', bdev, 'root', 'handle', '1:', 'htb', 'default', '20'],
      ['class', 'add', 'dev', bdev, 'parent', '1:', 'classid', '1:1', 'htb', 'rate', rate, 'ceil', rate],
      ['class', 'add', 'dev', bdev, 'parent', '1:1', 'classid', '1:10', 'htb', 'rate', `${o.rateMbit - 1}mbit`, 'ceil', rate, 'prio', '0'],
      ['class', 'add', 'dev', bdev, 'parent', '1:1', 'classid', '1:20', 'htb', 'rate', '1mbit', 'ceil', rate, 'prio', '1'],
      [
        'filter',
        'add',
        'dev',
        bdev,
        'parent',
        '1:',
        'protocol',
        'ip',
        'prio',
        '1',
        'u32',
        'match',
        'ip',
        'dsfield',
        '0xb8',
        '0xfc',
        'flowid',
        '1:10',
      ],
    ])
      await topo.exec('router', ['tc', ...cmd]);
    // a slow real link carries MTU-sized frames (64 KB super-packets would hog it); the ITM
    // receives with GRO, as a NIC does
    await topo.exec('router', ['ethtool', '-K', bdev, 'tso', 'off', 'gso', 'off']);
    await topo.exec('itm', ['ethtool', '-K', topo.dev('itm', 'client'), 'gro', 'on']);
    say('  offloads (TSO / GSO / GRO):');
    for (const h of topo.hosts) {
      for (const d of topo.devs(h)) {
        const k = (await topo.exec(h, ['ethtool', '-k', d.dev])).stdout;
        const on = (name: string) => (new RegExp(`^${name}: on`, 'm').test(k) ? 'on' : 'off');
        say(
          `    ${`${h} ${d.dev}`.padEnd(22)} ${on('tcp-segmentation-offload')} / ${on('generic-segmentation-offload')} / ${on('generic-receive-offload')}${d.dev === bdev ? '   (the bottleneck)' : ''}`,
        );
      }
    }

    const dev = topo.dev('itm', 'router');
    const server = topo.spawn(
      'server',
      [process.execPath, AGENT, 'server', JSON.stringify({ addr: '10.2.0.2', bulkPort: 7001, reqPort: 7002 })],
      { stdin: 'pipe' },
    );
    await next(server, 'ready', 10_000);
    const serverBytes = async () => {
      const from = server.stdoutLines.length;
      server.write(`${JSON.stringify({ cmd: 'stats' })}\n`);
      const { line } = await server.waitForLine((l) => l.includes('"stats"'), { from, timeoutMs: 5000 });
      const e = JSON.parse(line) as { bulkBytes: number; atMs: number };
      return e;
    };

    const res: { off: ModeResult[]; on: ModeResult[] } = { off: [], on: [] };
    for (let run = 1; run <= o.runs; run++) {
      for (const mode of ['off', 'on'] as const) {
        if (mode === 'on') await itmctl(topo, 'itm', ['load', 'qos', '--dev', dev, '--threshold', String(o.threshold)]);
        try {
          const bulk = topo.spawn(
            'client',
            [process.execPath, AGENT, 'bulk', JSON.stringify({ dst: '10.2.0.2', port: 7001, flows: o.bulkFlows })],
            { stdin: 'pipe' },
          );
          await next(bulk, 'started', 10_000);
          await new Promise((r) => setTimeout(r, 2000)); // the queue fills
          const b0 = await serverBytes();
          const t0 = performance.now();
          const reqs = topo.spawn('client', [
            process.execPath,
            AGENT,
            'requests',
            JSON.stringify({ dst: '10.2.0.2', port: 7002, size: o.size, count: o.requests, concurrency: 2 }),
          ]);
          const r = await next(reqs, 'result', 300_000);
          // the long flows' throughput over the same span whichever way the requests went
          const left = WINDOW_MS - (performance.now() - t0);
          if (left > 0) await new Promise((res) => setTimeout(res, left));
          const b1 = await serverBytes();
          bulk.write(`${JSON.stringify({ cmd: 'stop' })}\n`);
          await bulk.exited;
          const fct = r.fct as number[];
          const m: ModeResult = {
            mean: fct.reduce((a, b) => a + b, 0) / fct.length,
            p50: median(fct),
            p99: quantile(fct, 0.99),
            bulkMbit: ((b1.bulkBytes - b0.bulkBytes) * 8) / ((b1.atMs - b0.atMs) * 1000),
            fct,
          };
          res[mode].push(m);
          say(
            `  run ${run}, qos ${mode.padEnd(3)}: short requests mean ${m.mean.toFixed(1)} ms, p50 ${m.p50.toFixed(1)} ms, p99 ${m.p99.toFixed(1)} ms; long flows ${m.bulkMbit.toFixed(1)} Mbit/s`,
          );
        } finally {
          if (mode === 'on') await itmctl(topo, 'itm', ['unload', 'qos', '--dev', dev]);
        }
        await new Promise((r) => setTimeout(r, 1000)); // the queue drains
      }
    }
    mkdirSync(RESULTS, { recursive: true });
    const stamp = new Date().toISOString().replace(/[:]/g, '-').replace(/\..*/, '');
    const file = join(RESULTS, `qos-${stamp}.json`);
    const chart = join(RESULTS, `qos-${stamp}.svg`);
    const summary = (rs: ModeResult[]) => ({
      mean_ms: median(rs.map((r) => r.mean)),
      p50_ms: median(rs.map((r) => r.p50)),
      p99_ms: median(rs.map((r) => r.p99)),
      bulk_mbit: median(rs.map((r) => r.bulkMbit)),
    });
    writeFileSync(
      file,
      `${JSON.stringify({ options: o, median_over_runs: { off: summary(res.off), on: summary(res.on) }, runs: res }, null, 2)}\n`,
    );
    writeFileSync(
      chart,
      cdfSvg(
        res.off.flatMap((r) => r.fct),
        res.on.flatMap((r) => r.fct),
        o,
      ),
    );
    return { ...res, file, chart };
  } finally {
    await topo.destroy();
  }
}

/** The completion-time distributions, qos off and on, as a CDF on a log scale. */
function cdfSvg(off: number[], on: number[], o: QosDemoOptions): string {
  const W = 720,
    H = 420,
    L = 70,
    R = 20,
    T = 50,
    B = 60;
  const all = [...off, ...on].filter((x) => x > 0);
  const lo = Math.log10(Math.max(0.1, Math.min(...all))),
    hi = Math.log10(Math.max(...all) * 1.1);
  const x = (ms: number) => L + ((Math.log10(Math.max(ms, 0.1)) - lo) / (hi - lo)) * (W - L - R);
  const y = (q: number) => H - B - q * (H - T - B);
  const path = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.map((v, i) => `${i ? 'L' : 'M'}${x(v).toFixed(1)},${y((i + 1) / s.length).toFixed(1)}`).join(' ');
  };
  const ticks: string[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of [1, 2, 3, 5]) {
      const v = m * 10 ** e;
      if (Math.log10(v) < lo || Math.log10(v) > hi) continue;
      ticks.push(
        `<line x1="${x(v)}" y1="${T}" x2="${x(v)}" y2="${H - B}" stroke="#ddd"/><text x="${x(v)}" y="${H - B + 18}" text-anchor="middle">${v}</text>`,
      );
    }
  }
  for (const q of [0, 0.25, 0.5, 0.75, 1])
    ticks.push(
      `<line x1="${L}" y1="${y(q)}" x2="${W - R}" y2="${y(q)}" stroke="#eee"/><text x="${L - 8}" y="${y(q) + 4}" text-anchor="end">${q}</text>`,
    );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">Completion time of ${o.size / 1024} KB requests beside ${o.bulkFlows} long uploads (${o.rateMbit} Mbit/s bottleneck)</text>
${ticks.join('\n')}
<path d="${path(off)}" fill="none" stroke="#c0392b" stroke-width="2"/>
<path d="${path(on)}" fill="none" stroke="#2471a3" stroke-width="2"/>
<text x="${(L + W - R) / 2 - 60}" y="${T + 20}" fill="#2471a3">qos on (--threshold ${o.threshold})</text>
<text x="${(L + W - R) / 2 - 60}" y="${T + 38}" fill="#c0392b">qos off</text>
<text x="${(L + W - R) / 2}" y="${H - 18}" text-anchor="middle">completion time, ms (log scale)</text>
<text x="18" y="${(T + H - B) / 2}" transform="rotate(-90 18 ${(T + H - B) / 2})" text-anchor="middle">fraction of requests</text>
</svg>
`;
}
