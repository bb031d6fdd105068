// The itm demo: a client — itm — server topology in network namespaces of its own, itm marking
// one flow on the router's egress, and what the server sees on the wire, before and after.
// Run it with `npm run demo` (as root). It removes everything it made when it ends, also on error.
import { Topology, capture, udpFlow, tcpTransfer, type ParsedPacket } from '../test/harness/index.js';
import { cleanItmOnDestroy, clientItmServer, itmctl } from '../test/itm.js';
import { dscpName } from '../src/dscp.js';

const say = (s = '') => process.stdout.write(`${s}\n`);
const indent = (s: string) => s.trimEnd().split('\n').map((l) => `    ${l}`).join('\n');

async function main(): Promise<void> {
  say('itm demo: client — itm — server, in network namespaces made for this run');
  const topo = await Topology.create(clientItmServer());
  cleanItmOnDestroy(topo, 'itm');
  const stop = () => { void topo.destroy().then(() => process.exit(130)); };
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

    say('\n2. Load the mark module on the router\'s egress towards the server, for UDP to port 5001:');
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

main().catch((e: unknown) => {
  process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
