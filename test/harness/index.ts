// The namespace test harness in one import: topologies, traffic, captures, packets.
//
//   const topo = await Topology.create({ hosts, links, routes, forwarding: ['itm'] });
//   t.after(() => topo.destroy());            // or withTopology(decl, async (topo) => …)
//   const cap = await capture(topo, 'server', { dev: topo.dev('server', 'itm'), filter: 'udp' });
//   const r = await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 200, ratePps: 200 });
//   const packets = await cap.stop();         // ParsedPacket[]: dscp, checksums, ports, payload…
//
// Namespace tests should skip with `{ skip: namespaceSkipReason() }` where they cannot run.
export * from './netns.js';
export * from './traffic.js';
export * from './packet.js';
export * from './pcap.js';
export { FLOW_HEADER, FLOW_MAGIC } from './agent.js';
