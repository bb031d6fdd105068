// The itm demo: a client — itm — server topology in network namespaces of its own, itm marking
// one flow on the router's egress, and what the server sees on the wire, before and after.
// Run it with `npm run demo` (as root). It removes everything it made when it ends, also on error.
import { Topology, capture, udpFlow, tcpTransfer, type ParsedPacket } from '../test/harness/index.js';
import { cleanItmOnDestroy, clientItmServer, itmctl } from '../test/itm.js';
import { dscpName } from '../src/dscp.js';
import { QOS_DEFAULTS, qosDemo, type ModeResult } from './qos.js';
import { routeDemo } from './route.js';
import { fleetDemo } from './fleet.js';

const say = (s = '') => process.stdout.write(`${s}\n`);
const indent = (s: string) =>
  s
    .trimEnd()
    .split('\n')
    .map((l) => `    ${l}`)
    .join('\n');

async function markDemo(): Promise<void> {
  say('mark: client — itm — server, in network namespaces made for this run');
  const topo = await Topology.create(clientItmServer());
  cleanItmOnDestroy(topo, 'itm');
  const stop = () => {
    void topo.destroy().then(() => process.exit(130));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    const dev = topo.dev('itm', 'server');
    const srv = topo.dev('server', 'itm');
    const ctl = async (...args: string[]) => {
      say(`\n  # itmctl ${args.join(' ')}`);
      const r = await itmctl(topo, 'itm', args);
      if (r.stdout.trim()) say(indent(r.stdout));
    };

    async function traffic(): Promise<ParsedPacket[]> {
      const cap = await capture(topo, 'server', { dev: srv, filter: 'udp or tcp', snaplen: 128, direction: 'in' });
      await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 100, ratePps: 1000 });
      await udpFlow(topo, { from: 'client', to: 'server', family: 6, dport: 5001, count: 100, ratePps: 1000 });
      await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5002, count: 100, ratePps: 1000 });
      await tcpTransfer(topo, { from: 'client', to: 'server', family: 4, dport: 5003, bytes: 200_000 });
      return cap.stop(200);
    }
    function report(pkts: ParsedPacket[]): void {
      const rows = new Map<string, Map<number, number>>();
      for (const p of pkts) {
        if (p.dport === undefined || p.dport < 5001 || p.dport > 5003) continue;
        const k = `${p.proto === 6 ? 'TCP' : 'UDP'} IPv${p.family} → port ${p.dport}`;
        const m = rows.get(k) ?? new Map<number, number>();
        m.set(p.dscp ?? -1, (m.get(p.dscp ?? -1) ?? 0) + 1);
        rows.set(k, m);
      }
      for (const [k, m] of [...rows].sort()) {
        say(`    ${k.padEnd(24)} ${[...m].map(([d, n]) => `${n} packets with DSCP ${dscpName(d)}`).join(', ')}`);
      }
    }

    say('\n1. Without itm, the server sees every packet with DSCP 0:');
    report(await traffic());

    say("\n2. Load the mark module on the router's egress towards the server, for UDP to port 5001:");
    await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'proto=udp,dport=5001');
    say('\n   What the server sees now:');
    report(await traffic());

    say('\n3. What is loaded, in what order, and what it did:');
    await ctl('list', '--dev', dev);
    say('\n4. Why a flow is or is not marked:');
    await ctl('explain', '--dev', dev, '--hook', 'tc-egress', 'proto=udp,src=10.1.0.1,dst=10.2.0.2,sport=40000,dport=5001');
    await ctl('explain', '--dev', dev, '--hook', 'tc-egress', 'proto=tcp,src=10.1.0.1,dst=10.2.0.2,sport=40000,dport=5003');

    say('\n5. Clean up: down removes every filter, program, map and pin itm made.');
    await ctl('down', '--dev', dev);
  } finally {
    await topo.destroy();
  }
  say('\ndone: namespaces removed.');
}

async function qosPart(runs: number): Promise<void> {
  const o = { ...QOS_DEFAULTS, runs };
  const r = await qosDemo(o, say);
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
  const row = (what: string, f: (m: ModeResult) => number, unit: string, digits = 1) => {
    const off = med(r.off.map(f)),
      on = med(r.on.map(f));
    say(`    ${what.padEnd(28)} ${`${off.toFixed(digits)} ${unit}`.padStart(12)} ${`${on.toFixed(digits)} ${unit}`.padStart(12)}`);
    return { off, on };
  };
  say(`\n  median over ${runs} run${runs > 1 ? 's' : ''} of ${o.requests} requests of ${o.size / 1024} KB each:`);
  say(`    ${''.padEnd(28)} ${'qos off'.padStart(12)} ${'qos on'.padStart(12)}`);
  const mean = row('short requests, mean', (m) => m.mean, 'ms');
  row('short requests, p50', (m) => m.p50, 'ms');
  row('short requests, p99', (m) => m.p99, 'ms');
  row('long uploads, throughput', (m) => m.bulkMbit, 'Mbit/s');
  say(`\n  With qos on, short requests completed ${(mean.off / mean.on).toFixed(1)}× faster on average.`);
  say(`  figures: ${r.file}\n  chart:   ${r.chart}`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const parts = args.filter((a) => !a.startsWith('--'));
  const runsAt = args.indexOf('--runs');
  const runs = runsAt >= 0 ? Number(args[runsAt + 1]) : QOS_DEFAULTS.runs;
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs takes a whole number of at least 1');
  const unknown = parts.filter((p) => !['mark', 'qos', 'route', 'fleet'].includes(p) && p !== String(runs));
  if (unknown.length) throw new Error(`unknown demo part ${unknown.join(', ')}: mark, qos, route, fleet, or nothing for all`);
  const want = (p: string) => !parts.filter((x) => x !== String(runs)).length || parts.includes(p);
  say('itm demo');
  if (want('mark')) await markDemo();
  if (want('qos')) {
    say('');
    await qosPart(runs);
  }
  if (want('route')) {
    say('');
    await routeDemo(say);
  }
  if (want('fleet')) {
    say('');
    await fleetDemo(say);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
