// User-space modules on real traffic: client — itm — server, TypeScript modules hosted by itmd in
// the itm namespace, reached over AF_XDP, chained with kernel modules; packets checked at the server.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT } from '../src/catalog.js';
import type { AgentStatus } from '../src/agent/protocol.js';
import type { DeviceView, ModuleView } from '../src/registry/index.js';
import {
  Topology,
  capture,
  namespaceSkipReason,
  startUdpFlow,
  tcpTransfer,
  udpFlow,
  type Family,
  type ParsedPacket,
} from './harness/index.js';
import { RUN_DIR, cleanItmOnDestroy, clientItmServer, itmctl, itmctlJson } from './itm.js';

const skip = namespaceSkipReason();
const EF = 46,
  AF11 = 10,
  CS1 = 8;
const fixture = (name: string) => join(ROOT, 'dist', 'test', 'fixtures', 'user', `${name}.js`);

describe('user-space modules over AF_XDP', { skip }, () => {
  let topo: Topology;

  before(async () => {
    // offloads as the kernel sets them: packets sent by a host carry partial checksums, which the
    // module's host must complete, and its TCP reaches tc as GSO super-packets, which a veth
    // carries across whole: the dispatcher cuts them into segments for a module
    topo = await Topology.create(clientItmServer());
    cleanItmOnDestroy(topo, 'itm', 'client');
  });
  after(async () => {
    await topo?.destroy();
  });

  const ctl = (...args: string[]) => itmctl(topo, 'itm', args);
  const moduleView = async (dev: string, hook: string, name: string, host = 'itm'): Promise<ModuleView> => {
    const [d] = await itmctlJson<DeviceView[]>(topo, host, ['list', '--dev', dev]);
    const m = d?.hooks.find((h) => h.hook === hook)?.modules.find((x) => x.name === name);
    assert.ok(m, `${name} is listed on ${dev} ${hook}`);
    return m;
  };

  async function onTheWire(filter: string, traffic: () => Promise<unknown>): Promise<ParsedPacket[]> {
    const cap = await capture(topo, 'server', { dev: topo.dev('server', 'itm'), filter, snaplen: 2048, direction: 'in' });
    try {
      await traffic();
    } finally {
      await cap.stop(200);
    }
    return cap.stop();
  }

  function checkAll(pkts: ParsedPacket[], dscp: number, marker: string | undefined, what: string): void {
    assert.ok(pkts.length > 0, `${what}: packets were captured`);
    for (const p of pkts) {
      assert.equal(p.dscp, dscp, `${what}: DSCP of ${p.src} > ${p.dst}:${p.dport}`);
      if (p.family === 4) assert.equal(p.ipChecksumOk, true, `${what}: IPv4 header checksum`);
      assert.equal(p.l4ChecksumOk, true, `${what}: ${p.proto === 6 ? 'TCP' : 'UDP'} checksum`);
      if (marker) assert.equal(p.payload?.subarray(0, 1).toString(), marker, `${what}: the module's payload marker`);
    }
  }

  for (const hook of ['tc-egress', 'tc-ingress', 'xdp'] as const) {
    test(`a TypeScript module at ${hook}, between two kernel modules: each runs, in order, and checksums hold`, async () => {
      const dev = hook === 'tc-egress' ? topo.dev('itm', 'server') : topo.dev('itm', 'client');
      await ctl(
        'load',
        'mark',
        '--name',
        'before',
        '--dev',
        dev,
        '--hook',
        hook,
        '--dscp',
        'cs1',
        '--priority',
        '10',
        '--interest',
        'dport=5001-5003',
      );
      await ctl(
        'load',
        fixture('tag'),
        '--dev',
        dev,
        '--hook',
        hook,
        '--dscp',
        String(AF11),
        '--expect',
        String(CS1),
        '--priority',
        '50',
        '--interest',
        'dport=5001-5003',
      );
      await ctl(
        'load',
        'mark',
        '--name',
        'after',
        '--dev',
        dev,
        '--hook',
        hook,
        '--dscp',
        'ef',
        '--priority',
        '90',
        '--interest',
        'dport=5002',
      );
      try {
        const order = (await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', dev]))[0]!.hooks
          .find((h) => h.hook === hook)!
          .modules.map((m) => m.name);
        assert.deepEqual(order, ['before', 'tag', 'after']);
        for (const family of [4, 6] as Family[]) {
          const udp = await onTheWire('udp', async () => {
            await udpFlow(topo, { from: 'client', to: 'server', family, dport: 5001, count: 40, ratePps: 400 });
            await udpFlow(topo, { from: 'client', to: 'server', family, dport: 5002, count: 40, ratePps: 400 });
          });
          // 'U': the module saw the DSCP the one before it set; its own DSCP, or the one after's
          checkAll(
            udp.filter((p) => p.dport === 5001),
            AF11,
            'U',
            `IPv${family} UDP, tag last to set DSCP`,
          );
          checkAll(
            udp.filter((p) => p.dport === 5002),
            EF,
            'U',
            `IPv${family} UDP, the kernel module after it wins`,
          );
        }
        const tcp = await onTheWire('tcp dst port 5003', () =>
          tcpTransfer(topo, { from: 'client', to: 'server', family: 4, dport: 5003, bytes: 200_000 }),
        );
        checkAll(tcp, AF11, undefined, 'TCP through the module');
        assert.ok(
          tcp.some((p) => (p.payloadLen ?? 0) > 1000),
          'TCP data segments went through',
        );
        const tag = await moduleView(dev, hook, 'tag');
        assert.equal(tag.kind, 'user');
        assert.ok(tag.user!.received >= 160, `the module received the packets (${tag.user!.received})`);
        assert.equal(tag.counters.errors, 0);
        assert.ok((await moduleView(dev, hook, 'after')).counters.matched >= 80, 'the kernel module after it saw the packets');
      } finally {
        await ctl('unload', 'after', '--dev', dev, '--hook', hook);
        await ctl('unload', 'tag', '--dev', dev, '--hook', hook);
        await ctl('unload', 'before', '--dev', dev, '--hook', hook);
      }
    });
  }

  test('packets sent by the host itself (checksums left for offload) come out of a module complete', async () => {
    const dev = topo.dev('client', 'itm');
    await itmctl(topo, 'client', ['load', fixture('tag'), '--dev', dev, '--hook', 'tc-egress', '--interest', 'dport=5001']);
    try {
      const pkts = await onTheWire('udp or tcp', async () => {
        await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 30, ratePps: 300 });
        await tcpTransfer(topo, { from: 'client', to: 'server', family: 6, dport: 5001, bytes: 100_000 });
      });
      checkAll(
        pkts.filter((p) => p.proto === 17),
        AF11,
        'U',
        'local UDP',
      );
      // TCP sent by the host reaches tc as GSO super-packets (TSO): each is cut into its segments,
      // and every one goes through the module, its checksum completed
      checkAll(
        pkts.filter((p) => p.proto === 6),
        AF11,
        undefined,
        'local TCP over IPv6',
      );
      assert.ok(
        pkts.filter((p) => p.proto === 6).every((p) => p.origLen <= 1514),
        'as segments of the MTU',
      );
      const m = await moduleView(dev, 'tc-egress', 'tag', 'client');
      assert.deepEqual(m.user!.bypassed, { down: 0, behind: 0, size: 0 }, 'none went past it');
    } finally {
      await itmctl(topo, 'client', ['unload', 'tag', '--dev', dev]);
    }
  });

  test('a TypeScript module at tc-egress of a host sending bulk TCP sees the whole transfer, which arrives intact', async () => {
    const dev = topo.dev('client', 'itm');
    const bytes = 5 << 20;
    await itmctl(topo, 'client', ['load', fixture('stream'), '--dev', dev, '--hook', 'tc-egress', '--interest', 'proto=tcp,dport=5005']);
    try {
      // tcpTransfer checks that the server got every byte, the same (SHA-256 at both ends)
      await tcpTransfer(topo, { from: 'client', to: 'server', family: 4, dport: 5005, bytes });
      let seen: Record<string, number | string> | undefined;
      for (let i = 0; i < 30; i++) {
        const st = await itmctlJson<AgentStatus>(topo, 'client', ['agent', 'status']);
        seen = st.periodic.find((x) => x.name === 'stream')?.last?.classes;
        if (Number(seen?.bytes ?? 0) >= bytes) break;
        await sleep(100);
      }
      assert.ok(Number(seen?.bytes) >= bytes, `the module saw every payload byte (${JSON.stringify(seen)})`);
      assert.ok(Number(seen?.longest) <= 1514, `as the segments that go on the wire (${JSON.stringify(seen)})`);
      const m = await moduleView(dev, 'tc-egress', 'stream', 'client');
      assert.deepEqual(m.user!.bypassed, { down: 0, behind: 0, size: 0 }, 'none went past it while its host served');
      const [d] = await itmctlJson<DeviceView[]>(topo, 'client', ['list', '--dev', dev]);
      const packets = d!.hooks.find((h) => h.hook === 'tc-egress')!.packets;
      assert.ok(packets.segmented! > 0 && packets.segments! > packets.segmented!, `super-packets were cut (${JSON.stringify(packets)})`);
    } finally {
      await itmctl(topo, 'client', ['unload', 'stream', '--dev', dev]);
    }
  });

  // tc-egress on the way out to the server; xdp on the way in from the client
  const devOf = (hook: 'tc-egress' | 'xdp') => (hook === 'xdp' ? topo.dev('itm', 'client') : topo.dev('itm', 'server'));

  for (const hook of ['tc-egress', 'xdp'] as const)
    test(`a module that drops every third packet at ${hook}: exactly those are lost`, async () => {
      const dev = devOf(hook);
      await ctl('load', fixture('third'), '--dev', dev, '--hook', hook, '--interest', 'proto=udp,dport=5001');
      try {
        const r = await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 300, ratePps: 600 });
        const expected = Array.from({ length: 300 }, (_, i) => i).filter((i) => i % 3 === 2);
        assert.deepEqual(
          [...r.missing].sort((a, b) => a - b),
          expected,
        );
        const other = await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5009, count: 60, ratePps: 600 });
        assert.equal(other.missing.length, 0, 'outside its interest nothing is lost');
        assert.equal((await moduleView(dev, hook, 'third')).counters.dropped, 100);
      } finally {
        await ctl('unload', 'third', '--dev', dev, '--hook', hook);
      }
    });

  for (const hook of ['tc-egress', 'xdp'] as const)
    test(`killing a module's host at ${hook} while traffic flows: packets bypass it, counted, and it is restarted`, async () => {
      const dev = devOf(hook);
      await ctl('load', fixture('tag'), '--dev', dev, '--hook', hook, '--interest', 'proto=udp,dport=5001', '--marker', 'false');
      try {
        const flow = await startUdpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, durationMs: 3000, ratePps: 500 });
        await sleep(700);
        const st = await itmctlJson<AgentStatus>(topo, 'itm', ['agent', 'status']);
        const host = st.hosts.find((h) => h.name === 'tag');
        assert.ok(host?.pid, "the agent reports the host's PID");
        process.kill(host.pid, 'SIGKILL');
        await flow.done;
        const r = await flow.stop();
        // at most the packets in the module's hands at the kill are lost
        assert.ok(r.received >= r.sent - 64, `traffic kept flowing: ${r.received} of ${r.sent}`);
        const m = await moduleView(dev, hook, 'tag');
        assert.ok(m.user!.bypassed.down > 0, `the bypass was counted (${JSON.stringify(m.user)})`);
        const again = await itmctlJson<AgentStatus>(topo, 'itm', ['agent', 'status']);
        const h2 = again.hosts.find((h) => h.name === 'tag')!;
        assert.ok(h2.restarts >= 1 && h2.pid !== host.pid, `restarted (${JSON.stringify(h2)})`);
      } finally {
        await ctl('unload', 'tag', '--dev', dev, '--hook', hook);
      }
    });

  test("a user module's periodic functions run in its host, see its per-packet state, and show in agent status", async () => {
    const dev = topo.dev('itm', 'server');
    await ctl('load', fixture('count'), '--dev', dev, '--interest', 'proto=udp,dport=5001', '--report', '25');
    try {
      await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 30, ratePps: 300 });
      let p: AgentStatus['periodic'][number] | undefined;
      for (let i = 0; i < 30; i++) {
        const st = await itmctlJson<AgentStatus>(topo, 'itm', ['agent', 'status']);
        p = st.periodic.find((x) => x.name === 'count');
        if (p?.last?.classes?.packets === 30) break;
        await sleep(100);
      }
      assert.equal(p?.intervalMs, 200);
      assert.equal(p?.last?.classes?.packets, 30, `class-update saw what process counted (${JSON.stringify(p)})`);
      assert.ok((p?.runs ?? 0) >= 1);
      const log = readFileSync(join(RUN_DIR, 'agent', `${topo.netnsInode('itm')}.log`), 'utf8');
      assert.match(log, /count on .*: passed 25 packets/, "controller-update's change is in the agent's log");
    } finally {
      await ctl('unload', 'count', '--dev', dev);
    }
  });

  test("itmd's Prometheus metrics say what itmctl list says of a module and its host", async () => {
    const dev = topo.dev('itm', 'server');
    await ctl('load', fixture('third'), '--dev', dev, '--interest', 'proto=udp,dport=5001');
    try {
      await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 90, ratePps: 600 });
      const m = await moduleView(dev, 'tc-egress', 'third');
      // scraped where a Prometheus on the ITM would: itmd's default address, in its namespace
      const fetchJs = "fetch('http://127.0.0.1:9417/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))";
      const text = (await topo.exec('itm', [process.execPath, '-e', fetchJs])).stdout;
      const value = (metric: string) => {
        const line = text.split('\n').find((l) => l.startsWith(`${metric}{`) && l.includes(`dev="${dev}"`) && l.includes('name="third"'));
        assert.ok(line, `${metric} for third in:\n${text}`);
        return Number(line.split(' ').pop());
      };
      assert.equal(value('itm_module_dropped_total'), 30);
      assert.equal(value('itm_module_dropped_total'), m.counters.dropped);
      assert.equal(value('itm_user_diverted_total'), m.user!.diverted);
      assert.equal(value('itm_user_serving'), 1);
      assert.equal(value('itm_user_restarts_total'), 0);
      assert.match(text, /^itm_agent_up\{started="[^"]+"\} 1$/m);
      assert.match(text, new RegExp(`^itm_dispatcher_packets_total\\{dev="${dev}",hook="tc-egress",outcome="parsed"\\} [1-9]`, 'm'));
    } finally {
      await ctl('unload', 'third', '--dev', dev);
    }
  });

  test('a module that throws: its packets go on unchanged, the errors counted', async () => {
    const dev = topo.dev('itm', 'server');
    await ctl('load', fixture('throws'), '--dev', dev, '--interest', 'proto=udp,dport=5001');
    try {
      const pkts = await onTheWire('udp', () =>
        udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 30, ratePps: 300 }),
      );
      assert.equal(pkts.length, 30);
      checkAll(pkts, 0, undefined, 'after a throw');
      assert.equal((await moduleView(dev, 'tc-egress', 'throws')).counters.errors, 30);
    } finally {
      await ctl('unload', 'throws', '--dev', dev);
    }
  });

  test('bad module files are refused at load, with nothing left behind', async () => {
    const dev = topo.dev('itm', 'server');
    const bad = async (file: string, hook: string, msg: RegExp) => {
      const r = await itmctl(topo, 'itm', ['load', file, '--dev', dev, '--hook', hook], { check: false });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, msg);
    };
    await bad(fixture('noname'), 'tc-egress', /the module has no name/);
    await bad(join(ROOT, 'nowhere', 'x.js'), 'tc-egress', /unknown module file .*no such file/);
    await bad(fixture('throws'), 'tc-ingress', /throws cannot run at tc-ingress/);
    const [d] = await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', dev]);
    assert.ok(!d || d.hooks.every((h) => h.modules.length === 0));
  });
});
