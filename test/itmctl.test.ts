// itm on real traffic: client — itm — server in namespaces, itmctl driving the itm host, packets
// checked on the wire at the server (tcpdump there, checksums verified from the captured bytes).
// The suite runs twice: with the tc hooks on tcx links (the default on these kernels) and on
// cls_bpf filters (ITM_TC_ATTACH=cls_bpf, what kernels before 6.6 get); the tests about the
// attachment itself run under both, the others under tcx only.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfMap, BpfProgram, mountBpffs, tcx } from '../src/libbpf/index.js';
import { ROOT } from '../src/catalog.js';
import type { DeviceView } from '../src/registry/index.js';
import {
  Topology,
  capture,
  namespaceSkipReason,
  startUdpFlow,
  tcpTransfer,
  udpFlow,
  type Family,
  type ParsedPacket,
  describePacket,
  l4ChecksumSound,
} from './harness/index.js';
import { ITMCTL, RUN_DIR, cleanItmOnDestroy, clientItmServer, devicePins, itmctl, itmctlJson, pinDir } from './itm.js';

const skip = namespaceSkipReason();
const EF = 46,
  AF41 = 34,
  CS1 = 8;
const here = dirname(fileURLToPath(import.meta.url));
const TCX_TOOL = join(here, 'tcx-tool.js');
const COUNT_DSCP = join(ROOT, 'bpf', 'build', 'test', 'tc_count_dscp.bpf.o');

type Attach = 'tcx' | 'cls_bpf';
interface TcxEntry {
  progId: number;
  linkId: number;
  name: string;
}
const hasTcx = skip === undefined && tcx.supported();

for (const attach of ['tcx', 'cls_bpf'] as Attach[]) suite(attach);

function suite(attach: Attach): void {
  // the tests that are about how itm attaches run under both; the rest under tcx alone
  const only = (which: Attach) => (attach === which ? false : `under ${which} only`);
  const tcxOnly = only('tcx');
  const suiteSkip = skip ?? (attach === 'tcx' && !hasTcx ? 'the kernel has no tcx' : undefined);

  describe(`itmctl on real traffic (${attach})`, { skip: suiteSkip }, () => {
    let topo: Topology;
    let dev: string; // itm's device towards the server
    let srvDev: string; // the server's device
    let foreignPins: string; // a bpffs of the test's own, for the programs of "another tool"
    const savedAttach = process.env.ITM_TC_ATTACH;

    before(async () => {
      process.env.ITM_TC_ATTACH = attach; // itmctl inherits it
      topo = await Topology.create(clientItmServer());
      cleanItmOnDestroy(topo, 'itm');
      dev = topo.dev('itm', 'server');
      srvDev = topo.dev('server', 'itm');
      foreignPins = join(topo.tmpdir, 'bpf');
      mountBpffs(foreignPins);
      topo.onDestroy(() => execFileSync('umount', [foreignPins]));
    });
    after(async () => {
      if (savedAttach === undefined) delete process.env.ITM_TC_ATTACH;
      else process.env.ITM_TC_ATTACH = savedAttach;
      await topo?.destroy();
    });

    const ctl = (...args: string[]) => itmctl(topo, 'itm', args);
    const list = () => itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', dev]);
    /** the device's tcx programs, in the order they run */
    const tcxProgs = async (d = dev) =>
      JSON.parse((await topo.exec('itm', [process.execPath, TCX_TOOL, 'query', d])).stdout) as { ingress: TcxEntry[]; egress: TcxEntry[] };
    const names = (es: TcxEntry[]) => es.map((e) => e.name);
    /** another tool's tcx program counting what it sees of UDP to port 5010 (see tc_count_dscp.bpf.c) */
    async function foreignCounter(name: string, where: 'first' | 'last') {
      const dir = join(foreignPins, name);
      mkdirSync(dir, { recursive: true });
      await topo.exec('itm', [process.execPath, TCX_TOOL, 'attach', dev, 'egress', where, COUNT_DSCP, 'count_dscp', dir]);
      const counts = BpfMap.fromPin(join(dir, 'counts'));
      const read = (k: number) => Number(counts.lookup(Buffer.from([k, 0, 0, 0]))!.readBigUInt64LE(0));
      return {
        counts: () => ({ all: read(0), ef: read(1) }),
        linkPin: join(dir, 'link'),
        remove: () => {
          counts.close();
          rmSync(dir, { recursive: true, force: true }); // the link's last pin: it goes, and its program with it
        },
      };
    }
    /** whether clsact is on the device (with tcx, itm does not add it) */
    const hasClsact = async () => /clsact/.test((await topo.exec('itm', ['tc', 'qdisc', 'show', 'dev', dev])).stdout);

    /** Captures at the server while `traffic` runs; returns the packets of `filter`. */
    async function onTheWire(filter: string, traffic: () => Promise<unknown>): Promise<ParsedPacket[]> {
      const cap = await capture(topo, 'server', { dev: srvDev, filter, snaplen: 2048, direction: 'in' });
      try {
        await traffic();
      } finally {
        await cap.stop(200);
      }
      return cap.stop();
    }

    function assertAll(pkts: ParsedPacket[], dscp: number, what: string): void {
      assert.ok(pkts.length > 0, `${what}: packets were captured`);
      for (const p of pkts) {
        assert.equal(p.dscp, dscp, `${what}: dscp of ${p.src} > ${p.dst}:${p.dport}`);
        if (p.family === 4) assert.equal(p.ipChecksumOk, true, `${what}: IPv4 header checksum`);
        // with offloads on, the sender's checksum may still be left for offload: right as it is
        if (p.l4ChecksumOk !== undefined)
          assert.equal(l4ChecksumSound(p), true, `${what}: ${p.proto === 6 ? 'TCP' : 'UDP'} checksum (${describePacket(p)})`);
      }
    }

    test('mark sets the DSCP on UDP and TCP in its interest, IPv4 and IPv6, and leaves the rest alone', async () => {
      await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'dport=5001,dport=5002');
      try {
        for (const family of [4, 6] as Family[]) {
          const udp = await onTheWire('udp', async () => {
            await udpFlow(topo, { from: 'client', to: 'server', family, dport: 5001, count: 50, ratePps: 500 });
            await udpFlow(topo, { from: 'client', to: 'server', family, dport: 5003, count: 50, ratePps: 500 });
          });
          assertAll(
            udp.filter((p) => p.dport === 5001),
            EF,
            `IPv${family} UDP in the interest`,
          );
          assertAll(
            udp.filter((p) => p.dport === 5003),
            0,
            `IPv${family} UDP outside the interest`,
          );
          const tcp = await onTheWire('tcp dst port 5002', () =>
            tcpTransfer(topo, { from: 'client', to: 'server', family, dport: 5002, bytes: 300_000 }),
          );
          assertAll(tcp, EF, `IPv${family} TCP in the interest`);
          assert.ok(
            tcp.some((p) => (p.payloadLen ?? 0) > 1000),
            'the TCP capture holds data segments',
          );
        }
        const [d] = await list();
        const h = d!.hooks.find((x) => x.hook === 'tc-egress')!;
        const m = h.modules[0]!;
        assert.equal(m.name, 'mark');
        assert.ok(m.counters.matched > 0 && m.counters.seen >= m.counters.matched, 'counters move');
        // list says how each hook is attached
        const text = (await ctl('list', '--dev', dev)).stdout;
        assert.ok(
          d!.hooks.every((x) => x.attached && x.attachment === attach),
          `every hook on ${attach}`,
        );
        if (attach === 'tcx') {
          assert.ok(h.linkId! > 0, 'the link id is listed');
          assert.match(text, new RegExp(`tc-egress: dispatcher attached \\(tcx \\(link ${h.linkId}\\), prog ${h.progId}\\)`));
          const progs = await tcxProgs();
          assert.deepEqual(names(progs.egress), ['itm_dispatch']);
          assert.deepEqual(progs.egress[0], { progId: h.progId, linkId: h.linkId, name: 'itm_dispatch' });
          assert.equal(await hasClsact(), false, 'no clsact needed');
        } else {
          assert.equal(h.linkId, undefined);
          assert.match(text, new RegExp(`tc-egress: dispatcher attached \\(cls_bpf, prog ${h.progId}\\)`));
          assert.deepEqual((await tcxProgs()).egress, [], 'nothing on tcx');
        }
      } finally {
        await ctl('unload', 'mark', '--dev', dev);
      }
    });

    test('modules run in priority order: the later one wins, and reorder swaps them', { skip: tcxOnly }, async () => {
      await ctl('load', 'mark', '--name', 'first', '--dev', dev, '--dscp', 'af41', '--priority', '10', '--interest', 'proto=udp');
      await ctl('load', 'mark', '--name', 'second', '--dev', dev, '--dscp', 'cs1', '--priority', '20', '--interest', 'proto=udp');
      try {
        const flow = () => udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 30, ratePps: 300 });
        assertAll(await onTheWire('udp', flow), CS1, 'second (priority 20) runs last');
        await ctl('reorder', 'first', '--dev', dev, '--priority', '30');
        assertAll(await onTheWire('udp', flow), AF41, 'after reorder, first (priority 30) runs last');
        const order = (await list())[0]!.hooks.find((h) => h.hook === 'tc-egress')!.modules.map((m) => m.name);
        assert.deepEqual(order, ['second', 'first']);
        // equal priorities keep load order
        await ctl('reorder', 'second', '--dev', dev, '--priority', '30');
        assertAll(await onTheWire('udp', flow), CS1, 'equal priorities: the one given it last runs last');
      } finally {
        await ctl('unload', 'first', '--dev', dev);
        await ctl('unload', 'second', '--dev', dev);
      }
    });

    test('unloading one module while traffic flows leaves the other working', { skip: tcxOnly }, async () => {
      await ctl('load', 'mark', '--name', 'a', '--dev', dev, '--dscp', 'af41', '--interest', 'dport=5001');
      await ctl('load', 'mark', '--name', 'b', '--dev', dev, '--dscp', 'cs1', '--interest', 'dport=5002');
      try {
        let resB;
        const pkts = await onTheWire('udp dst port 5002', async () => {
          const fa = await startUdpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, ratePps: 200 });
          const fb = await startUdpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5002, ratePps: 200 });
          await new Promise((r) => setTimeout(r, 500));
          await ctl('unload', 'a', '--dev', dev);
          await new Promise((r) => setTimeout(r, 500));
          await fa.stop();
          resB = await fb.stop();
        });
        assert.deepEqual(resB!.missing, [], "no packet of the other module's flow was lost");
        assert.ok(resB!.received > 100);
        assertAll(pkts, CS1, 'b kept marking');
      } finally {
        await ctl('unload', 'b', '--dev', dev);
      }
    });

    test('loading and unloading a module 20 times under a steady stream loses no packet', { skip: tcxOnly }, async () => {
      await ctl('load', 'mark', '--name', 'steady', '--dev', dev, '--dscp', 'cs1', '--interest', 'dport=5009');
      try {
        const flow = await startUdpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, ratePps: 300 });
        for (let i = 0; i < 20; i++) {
          await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'dport=5001');
          await ctl('unload', 'mark', '--dev', dev);
        }
        const r = await flow.stop();
        assert.ok(r.sent > 100, `the stream ran (${r.sent} sent)`);
        assert.deepEqual(r.missing, [], `every packet arrived (${r.received} of ${r.sent})`);
        assert.equal(r.duplicates, 0);
      } finally {
        await ctl('unload', 'steady', '--dev', dev);
      }
    });

    test('bad input gets one line, a non-zero exit, and changes nothing', { skip: tcxOnly }, async () => {
      await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'proto=udp');
      try {
        const snapshot = async () =>
          JSON.stringify({
            chain: (await list()).map((d) =>
              d.hooks.map((h) => [h.hook, h.linkId, h.progId, h.modules.map((m) => [m.name, m.interest, m.priority, m.params])]),
            ),
            tcx: await tcxProgs(),
            pins: readdirSync(pinDir(topo, 'itm'), { recursive: true }).map(String).sort(),
            filters: [
              (await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'ingress'])).stdout,
              (await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'egress'])).stdout,
            ],
          });
        const before = await snapshot();
        const cases: Array<[string[], RegExp]> = [
          [['load', 'mark', '--dev', 'eth9', '--dscp', 'ef'], /cannot load mark on eth9: no such device/],
          [['load', 'nosuch', '--dev', dev], /unknown module 'nosuch'/],
          [['load', 'mark', '--dev', dev, '--hook', 'prerouting', '--dscp', 'ef'], /Invalid values.*hook.*prerouting/],
          [['load', 'mark', '--dev', dev, '--name', 'm2', '--dscp', 'ef', '--colour', 'red'], /unknown parameter --colour/],
          [['load', 'mark', '--dev', dev, '--name', 'm2', '--dscp', '64'], /invalid --dscp '64'/],
          [['load', 'mark', '--dev', dev, '--name', 'm2'], /--dscp is required/],
          [['load', 'mark', '--dev', dev, '--name', 'm2', '--dscp', 'ef', '--interest', 'dport=99999'], /invalid interest dport=99999/],
          [['load', 'mark', '--dev', dev, '--name', 'm2', '--dscp', 'ef', '--interest', 'src=10.0.0.0/33'], /prefix length \/33/],
          [['load', 'mark', '--dev', dev, '--name', 'm2', '--dscp', 'ef', '--interest', 'colour=red'], /invalid interest key 'colour'/],
          [['load', 'mark', '--dev', dev, '--dscp', 'ef'], /already loaded/],
          [['unload', 'nosuch', '--dev', dev], /nosuch is not loaded on/],
          [['up', '--dev', 'eth9'], /cannot set up eth9: no such device/],
        ];
        for (const [args, re] of cases) {
          const r = await itmctl(topo, 'itm', args, { check: false });
          assert.notEqual(r.code, 0, `${args.join(' ')}: non-zero exit`);
          const lines = r.stderr.trim().split('\n');
          assert.equal(lines.length, 1, `${args.join(' ')}: one line, got:\n${r.stderr}`);
          assert.match(lines[0]!, /^itmctl: /);
          assert.match(lines[0]!, re, args.join(' '));
        }
        // root with every capability dropped is as unprivileged as any user
        const nobody = await topo.exec('itm', ['setpriv', '--bounding-set=-all', '--inh-caps=-all', process.execPath, ITMCTL, 'list'], {
          check: false,
        });
        assert.notEqual(nobody.code, 0);
        assert.match(nobody.stderr.trim(), /^itmctl: must run as root/);
        const after = await snapshot();
        assert.equal(after, before, 'nothing changed');
      } finally {
        await ctl('unload', 'mark', '--dev', dev);
      }
    });

    test('a load the kernel refuses leaves nothing behind, and disturbs no other module', async () => {
      // an out-of-tree module (found through ITM_MODULE_PATH) whose program the verifier refuses
      const dir = join(topo.tmpdir, 'modules', 'refused');
      mkdirSync(dir, { recursive: true });
      writeFileSync(
        join(dir, 'module.js'),
        `export default ${JSON.stringify({
          name: 'refused',
          description: 'refused by the verifier',
          hooks: ['tc-ingress', 'tc-egress'],
          kernel: { object: join(ROOT, 'bpf', 'build', 'test', 'tc_refused_module.bpf.o') },
          params: {},
        })};\n`,
      );
      const env = ['env', `ITM_MODULE_PATH=${join(topo.tmpdir, 'modules')}`, process.execPath, ITMCTL];
      const pinsOf = () =>
        existsSync(pinDir(topo, 'itm')) ? readdirSync(pinDir(topo, 'itm'), { recursive: true }).map(String).sort() : [];
      const filters = async () => (await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'egress'])).stdout;

      // 1. on a device with nothing of itm: the dispatcher it had to set up goes again
      await ctl('down', '--dev', dev);
      let r = await topo.exec('itm', [...env, 'load', 'refused', '--dev', dev], { check: false });
      assert.equal(r.code, 1);
      assert.match(r.stderr.trim(), /^itmctl: refused: the kernel refused its program: /);
      assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
      assert.deepEqual(
        pinsOf().filter((p) => p !== 'netns'),
        [],
        'no pins left',
      );
      assert.equal((await filters()).trim(), '', 'no filter left');
      assert.equal(await hasClsact(), false, 'the clsact itm added (cls_bpf) is gone too');
      assert.deepEqual(await tcxProgs(), { ingress: [], egress: [] }, 'no tcx link left');
      assert.deepEqual(await list(), [], 'no record left');

      // 2. on a hook running another module: the chain, pins and marking stay as they were
      await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'proto=udp');
      try {
        const before = {
          pins: pinsOf(),
          filters: await filters(),
          tcx: await tcxProgs(),
          chain: JSON.stringify((await list())[0]!.hooks.map((h) => h.modules.map((m) => m.name))),
        };
        r = await topo.exec('itm', [...env, 'load', 'refused', '--dev', dev, '--priority', '10'], { check: false });
        assert.equal(r.code, 1);
        assert.deepEqual(pinsOf(), before.pins, 'pins as they were');
        assert.equal(await filters(), before.filters, 'filters as they were');
        assert.deepEqual(await tcxProgs(), before.tcx, 'tcx links as they were');
        assert.equal(JSON.stringify((await list())[0]!.hooks.map((h) => h.modules.map((m) => m.name))), before.chain);
        assertAll(
          await onTheWire('udp', () => udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 20, ratePps: 200 })),
          EF,
          'mark still marks',
        );
      } finally {
        await ctl('down', '--dev', dev);
      }
    });

    test('filters other tools have on clsact run after itm on the same hook', async () => {
      await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'proto=udp');
      const obj = join(ROOT, 'bpf', 'build', 'test', 'tc_drop_port.bpf.o');
      // with tcx itm needs no clsact, and its old place there (handle 0x1717, pref 1) is free for
      // anyone: the other tool takes it; with cls_bpf it is itm's, and the other tool goes after
      const addedClsact = !(await hasClsact());
      if (addedClsact) await topo.exec('itm', ['tc', 'qdisc', 'add', 'dev', dev, 'clsact']);
      const place = attach === 'tcx' ? ['pref', '1', 'handle', '0x1717'] : ['pref', '200'];
      // tc keeps its own bpffs state: point it at a directory of the test's, not at itm's bpffs
      const tcEnv = ['env', `TC_BPF_MNT=${join(topo.tmpdir, 'tc-bpf')}`];
      await topo.exec('itm', [...tcEnv, 'tc', 'filter', 'add', 'dev', dev, 'egress', ...place, 'bpf', 'da', 'obj', obj, 'sec', 'tc']);
      try {
        const up = await itmctlJson<{ hooks: Record<string, string> }>(topo, 'itm', ['up', '--dev', dev, '--hook', 'tc-egress']);
        assert.deepEqual(up.hooks, { 'tc-egress': 'adopted' }, 'the filter is no conflict');
        const seen = async () => (await list())[0]!.hooks.find((h) => h.hook === 'tc-egress')!.modules[0]!.counters.matched;
        const before = await seen();
        const dropped = await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5009, count: 20, ratePps: 200 });
        assert.ok((await seen()) - before >= 20, 'itm ran first on those packets');
        assert.equal(dropped.received, 0, 'the other filter saw the packets after itm and dropped them');
        const pkts = await onTheWire('udp', () =>
          udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 20, ratePps: 200 }),
        );
        assertAll(pkts, EF, 'the rest went through both, marked');
        assert.equal(pkts.length, 20);
      } finally {
        await topo.exec('itm', ['tc', 'filter', 'del', 'dev', dev, 'egress', 'pref', place[1]!]);
        if (addedClsact) await topo.exec('itm', ['tc', 'qdisc', 'del', 'dev', dev, 'clsact']);
        await ctl('unload', 'mark', '--dev', dev);
      }
    });

    test('a pin tree left by a dead namespace whose inode was reused is not adopted', async () => {
      await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef');
      // make the tree look like another namespace's: its marker holds another cookie
      const marker = BpfMap.fromPin(join(pinDir(topo, 'itm'), 'netns'));
      const v = marker.lookup(Buffer.alloc(4))!;
      v.writeBigUInt64LE(v.readBigUInt64LE(0) + 1n);
      marker.update(Buffer.alloc(4), v);
      marker.close();
      assert.deepEqual(await list(), [], 'list shows nothing of the dead namespace');
      assert.equal(existsSync(devicePins(topo, 'itm', dev)), false, 'its pins are gone');
      if (attach === 'tcx') {
        // the tree held the links' pins: removing it detached the orphaned dispatchers
        assert.deepEqual(await tcxProgs(), { ingress: [], egress: [] }, 'the tree took its links with it');
      }
      // (with cls_bpf, the device's filter still runs the orphaned dispatcher): up sets up a fresh one
      const up = await itmctlJson<{ hooks: Record<string, string> }>(topo, 'itm', ['up', '--dev', dev, '--hook', 'tc-egress']);
      assert.deepEqual(up.hooks, { 'tc-egress': 'created' });
      const pkts = await onTheWire('udp', () =>
        udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 10, ratePps: 200 }),
      );
      assertAll(pkts, 0, 'the fresh dispatcher runs no module');
      await ctl('down', '--dev', dev);
    });

    test('itmctl runs started at once in one namespace serialise, on one device and on two', { skip: tcxOnly }, async () => {
      const other = topo.dev('itm', 'client');
      const runs: Array<Promise<unknown>> = [];
      for (let i = 0; i < 4; i++) {
        runs.push(ctl('load', 'mark', '--name', `s${i}`, '--dev', dev, '--dscp', 'cs1', '--interest', `dport=${6000 + i}`));
        runs.push(ctl('load', 'mark', '--name', `c${i}`, '--dev', other, '--hook', 'tc-ingress', '--dscp', 'cs1'));
      }
      await Promise.all(runs);
      try {
        const all = await itmctlJson<DeviceView[]>(topo, 'itm', ['list']);
        const names = (d: string) =>
          all
            .find((x) => x.dev === d)!
            .hooks.flatMap((h) => h.modules.map((m) => m.name))
            .sort();
        assert.deepEqual(names(dev), ['s0', 's1', 's2', 's3']);
        assert.deepEqual(names(other), ['c0', 'c1', 'c2', 'c3']);
        const ids = all.flatMap((d) =>
          d.hooks.map((h) =>
            h.modules
              .map((m) => m.id)
              .sort()
              .join(','),
          ),
        );
        assert.deepEqual(ids, ['0,1,2,3', '0,1,2,3'], 'each hook gave out distinct ids');
      } finally {
        await Promise.all([ctl('down', '--dev', dev), ctl('down', '--dev', other)]);
      }
      assert.deepEqual(await itmctlJson<DeviceView[]>(topo, 'itm', ['list']), []);
    });

    test('a foreign tcx program keeps running with itm loaded, up, reloaded and down; itm goes first', { skip: tcxOnly }, async () => {
      await ctl('down', '--dev', dev);
      const flow = (count: number) => udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5010, count, ratePps: 200 });
      // another tool was on the hook before itm
      const early = await foreignCounter('early', 'first');
      let late: Awaited<ReturnType<typeof foreignCounter>> | undefined;
      try {
        await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'dport=5010');
        assert.deepEqual(names((await tcxProgs()).egress), ['itm_dispatch', 'count_dscp'], 'itm went ahead of it');
        const r1 = await flow(20);
        assert.equal(r1.received, 20);
        assert.deepEqual(early.counts(), { all: 20, ef: 20 }, "it runs after itm: it sees itm's marks");

        // up (adopted) and a reload leave both where they are
        const linkId = (await list())[0]!.hooks.find((h) => h.hook === 'tc-egress')!.linkId;
        assert.deepEqual(
          (await itmctlJson<{ hooks: Record<string, string> }>(topo, 'itm', ['up', '--dev', dev, '--hook', 'tc-egress'])).hooks,
          {
            'tc-egress': 'adopted',
          },
        );
        await ctl('unload', 'mark', '--dev', dev);
        await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'dport=5010');
        const progs = await tcxProgs();
        assert.deepEqual(names(progs.egress), ['itm_dispatch', 'count_dscp']);
        assert.equal(progs.egress[0]!.linkId, linkId, "itm's link is the one it had");
        await flow(10);
        assert.deepEqual(early.counts(), { all: 30, ef: 30 });

        // a program another tool puts first later runs ahead of itm, and sees the packets unmarked
        late = await foreignCounter('late', 'first');
        assert.deepEqual(names((await tcxProgs()).egress), ['count_dscp', 'itm_dispatch', 'count_dscp']);
        await flow(10);
        assert.deepEqual(late.counts(), { all: 10, ef: 0 }, 'the one before itm: unmarked');
        assert.deepEqual(early.counts(), { all: 40, ef: 40 }, 'the one after itm: marked');

        // down takes itm's link alone off the hook
        await ctl('down', '--dev', dev);
        const left = (await tcxProgs()).egress;
        assert.deepEqual(names(left), ['count_dscp', 'count_dscp'], 'both of the other tool are still attached');
        const r2 = await flow(10);
        assert.equal(r2.received, 10);
        assert.deepEqual(early.counts(), { all: 50, ef: 40 }, 'it still runs, on packets no longer marked');
        assert.deepEqual(late.counts(), { all: 20, ef: 0 });
      } finally {
        late?.remove();
        early.remove();
        await ctl('down', '--dev', dev);
      }
      assert.deepEqual(await tcxProgs(), { ingress: [], egress: [] });
    });

    test('a hook an older itm set up on cls_bpf is adopted as it is, and stays cls_bpf until down', { skip: tcxOnly }, async () => {
      await ctl('down', '--dev', dev);
      // what an itm before tcx did: a cls_bpf filter on clsact
      await topo.exec('itm', ['env', 'ITM_TC_ATTACH=cls_bpf', process.execPath, ITMCTL, 'up', '--dev', dev]);
      try {
        // this itm (tcx by default) adopts it, and loads into it
        assert.deepEqual((await itmctlJson<{ hooks: Record<string, string> }>(topo, 'itm', ['up', '--dev', dev])).hooks, {
          'tc-ingress': 'adopted',
          'tc-egress': 'adopted',
        });
        await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef', '--interest', 'proto=udp');
        const [d] = await list();
        assert.ok(
          d!.hooks.every((h) => h.attached && h.attachment === 'cls_bpf' && h.linkId === undefined),
          JSON.stringify(d!.hooks),
        );
        assert.deepEqual(await tcxProgs(), { ingress: [], egress: [] }, 'nothing moved to tcx');
        assert.match((await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'egress'])).stdout, /itm_dispatch/);
        assertAll(
          await onTheWire('udp', () => udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 20, ratePps: 200 })),
          EF,
          'marked through the cls_bpf filter',
        );
        // a cls_bpf filter someone deleted is put back as cls_bpf: the hook is cls_bpf until down
        await topo.exec('itm', ['tc', 'filter', 'del', 'dev', dev, 'egress', 'pref', '1']);
        assert.deepEqual((await itmctlJson<{ hooks: Record<string, string> }>(topo, 'itm', ['up', '--dev', dev])).hooks, {
          'tc-ingress': 'adopted',
          'tc-egress': 'repaired',
        });
        assert.equal((await list())[0]!.hooks.find((h) => h.hook === 'tc-egress')!.attachment, 'cls_bpf');
        assert.deepEqual(await tcxProgs(), { ingress: [], egress: [] });
        await ctl('unload', 'mark', '--dev', dev);
      } finally {
        await ctl('down', '--dev', dev);
      }
      assert.equal((await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'egress'])).stdout.trim(), '');
      assert.equal(await hasClsact(), false, 'the clsact it had added went with it');
      // set up afresh, the hook is on tcx
      await ctl('up', '--dev', dev);
      assert.ok((await list())[0]!.hooks.every((h) => h.attachment === 'tcx' && h.attached));
      await ctl('down', '--dev', dev);
    });

    test('at xdp: kernel modules mark packets as they come in; xdp is set up only when asked, taken off by down, and another XDP program is never replaced', {
      skip: tcxOnly,
    }, async () => {
      const inDev = topo.dev('itm', 'client');
      const xdpOf = async () => {
        const [l] = JSON.parse((await topo.exec('itm', ['ip', '-j', 'link', 'show', 'dev', inDev])).stdout) as Array<{
          xdp?: { prog?: { name?: string } };
        }>;
        return l?.xdp?.prog?.name;
      };
      const up0 = await itmctlJson<{ hooks: Record<string, string> }>(topo, 'itm', ['up', '--dev', inDev]);
      assert.deepEqual(Object.keys(up0.hooks).sort(), ['tc-egress', 'tc-ingress'], 'up without --hook leaves XDP alone');
      assert.equal(await xdpOf(), undefined);
      // qos first (flows of up to 10 packets are EF), then mark on another port
      await ctl('load', 'qos', '--dev', inDev, '--hook', 'xdp', '--threshold', '10', '--interest', 'dport=5001', '--priority', '10');
      await ctl('load', 'mark', '--dev', inDev, '--hook', 'xdp', '--dscp', 'af41', '--interest', 'dport=5002', '--priority', '20');
      try {
        assert.equal(await xdpOf(), 'itm_dispatch');
        for (const family of [4, 6] as Family[]) {
          const udp = await onTheWire('udp', async () => {
            await udpFlow(topo, { from: 'client', to: 'server', family, dport: 5001, count: 30, ratePps: 300 });
            await udpFlow(topo, { from: 'client', to: 'server', family, dport: 5002, count: 20, ratePps: 300 });
          });
          const q = udp.filter((p) => p.dport === 5001);
          assert.equal(q.length, 30, `IPv${family}: every qos packet arrived`);
          assertAll(q.slice(0, 10), EF, `IPv${family}: the first 10 packets of the flow`);
          assertAll(q.slice(10), 0, `IPv${family}: the rest of the flow`);
          assertAll(
            udp.filter((p) => p.dport === 5002),
            AF41,
            `IPv${family}: mark at xdp`,
          );
        }
        const tcp = await onTheWire('tcp dst port 5002', () =>
          tcpTransfer(topo, { from: 'client', to: 'server', family: 4, dport: 5002, bytes: 300_000 }),
        );
        assertAll(tcp, AF41, 'TCP marked at xdp');
        const [d] = await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', inDev]);
        const h = d!.hooks.find((x) => x.hook === 'xdp')!;
        assert.equal(h.attached, true);
        assert.equal(h.mode, 'native');
        assert.deepEqual(
          h.modules.map((m) => m.name),
          ['qos', 'mark'],
        );
        assert.ok(h.modules.every((m) => m.counters.matched > 0 && m.counters.errors === 0));
      } finally {
        await ctl('unload', 'mark', '--dev', inDev);
        await ctl('unload', 'qos', '--dev', inDev);
      }
      await ctl('down', '--dev', inDev);
      assert.equal(await xdpOf(), undefined, 'down took the XDP dispatcher off');

      // another tool's XDP program: itm refuses the hook and leaves it in place
      const foreign = join(ROOT, 'bpf', 'build', 'test', 'xdp_foreign.bpf.o');
      await topo.exec('itm', ['ip', 'link', 'set', 'dev', inDev, 'xdp', 'obj', foreign, 'sec', 'xdp']);
      try {
        const r = await itmctl(topo, 'itm', ['load', 'mark', '--dev', inDev, '--hook', 'xdp', '--dscp', 'ef'], { check: false });
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /^itmctl: cannot set up eth-client xdp: another XDP program \(id \d+, foreign_xdp\) is attached to it$/m);
        assert.equal(await xdpOf(), 'foreign_xdp');
        await ctl('down', '--dev', inDev);
        assert.equal(await xdpOf(), 'foreign_xdp', 'down leaves it alone too');
      } finally {
        await topo.exec('itm', ['ip', 'link', 'set', 'dev', inDev, 'xdp', 'off']);
      }
      assert.deepEqual(await itmctlJson<DeviceView[]>(topo, 'itm', ['list', '--dev', inDev]), [], 'nothing left of the refused load');
    });

    test('pins of another layout version are refused, never adopted, and down removes them', async () => {
      await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef');
      const egress = join(devicePins(topo, 'itm', dev), 'tc-egress');
      const flow = () =>
        onTheWire('udp', () => udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 20, ratePps: 200 }));
      const refused = async (args: string[], re: RegExp) => {
        const r = await itmctl(topo, 'itm', args, { check: false });
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.match(r.stderr, re);
      };
      try {
        for (const [what, makeForeign, version] of [
          // a newer itm's tree: its layout map says so
          [
            'newer',
            () => {
              const m = BpfMap.fromPin(join(egress, 'itm_layout'));
              const v = Buffer.alloc(4);
              v.writeUInt32LE(99);
              m.update(Buffer.alloc(4), v);
              m.close();
            },
            99,
          ],
          // a tree of before the layout was recorded: no layout map
          ['older', () => rmSync(join(egress, 'itm_layout')), 1],
        ] as const) {
          makeForeign();
          const msg = new RegExp(
            `^itmctl: ${dev} tc-egress was set up by an? ${what} itm \\(pin layout ${version}; this itm's is \\d+\\), which it does not adopt; take it down with itmctl down --dev ${dev} --hook tc-egress`,
          );
          await refused(['load', 'mark', '--name', 'mark2', '--dev', dev, '--dscp', 'af11'], msg);
          await refused(['up', '--dev', dev], msg);
          await refused(['unload', 'mark', '--dev', dev], msg);
          const text = (await ctl('list')).stdout;
          assert.match(text, new RegExp(`tc-egress: set up by another itm \\(pin layout ${version}\\)`));
          // nothing was touched: the tree's dispatcher and module still mark
          assertAll(await flow(), EF, `the ${what} tree keeps running`);
          // down removes it, whatever its layout; then this itm sets the hook up afresh
          await ctl('down', '--dev', dev, '--hook', 'tc-egress');
          assert.equal(existsSync(egress), false);
          await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef');
          assertAll(await flow(), EF, `after the ${what} tree went`);
        }
      } finally {
        await ctl('down', '--dev', dev);
      }
    });

    test('up adopts what is there, repairs a removed attachment, and down leaves nothing behind', async () => {
      const up = async () => (await itmctlJson<{ hooks: Record<string, string> }>(topo, 'itm', ['up', '--dev', dev])).hooks;
      const up1 = await up();
      assert.ok(Object.values(up1).every((o) => o === 'adopted' || o === 'created'));
      assert.deepEqual(await up(), { 'tc-ingress': 'adopted', 'tc-egress': 'adopted' });
      // another tool's filter on the same device stays untouched throughout (with tcx, the test
      // adds the clsact it needs)
      if (!(await hasClsact())) await topo.exec('itm', ['tc', 'qdisc', 'add', 'dev', dev, 'clsact']);
      await topo.exec('itm', [
        'tc',
        'filter',
        'add',
        'dev',
        dev,
        'ingress',
        'pref',
        '100',
        'protocol',
        'all',
        'u32',
        'match',
        'u32',
        '0',
        '0',
        'flowid',
        '1:1',
      ]);
      if (attach === 'cls_bpf') {
        // someone deletes our egress filter: up puts it back, without duplicating anything
        await topo.exec('itm', ['tc', 'filter', 'del', 'dev', dev, 'egress', 'pref', '1']);
        assert.deepEqual(await up(), { 'tc-ingress': 'adopted', 'tc-egress': 'repaired' });
      } else {
        const hookDir = (h: string) => join(devicePins(topo, 'itm', dev), h);
        // someone removes the egress link's pin (which detaches it), and detaches the ingress link
        // (its pin stays, defunct): up attaches both again, without duplicating anything
        rmSync(join(hookDir('tc-egress'), 'link'));
        await topo.exec('itm', [process.execPath, TCX_TOOL, 'detach', join(hookDir('tc-ingress'), 'link')]);
        assert.deepEqual(await tcxProgs(), { ingress: [], egress: [] }, 'both detached');
        const listed = (await list())[0]!.hooks;
        assert.ok(
          listed.every((h) => !h.attached && h.linkId === undefined),
          'list says neither is attached',
        );
        assert.deepEqual(await up(), { 'tc-ingress': 'repaired', 'tc-egress': 'repaired' });
        // the dispatcher itself goes (its pin removed): up makes a fresh one and puts it into the
        // same link, in place
        const before = (await list())[0]!.hooks.find((h) => h.hook === 'tc-egress')!;
        rmSync(join(hookDir('tc-egress'), 'dispatch'));
        assert.deepEqual(await up(), { 'tc-ingress': 'adopted', 'tc-egress': 'repaired' });
        const afterRepair = (await list())[0]!.hooks.find((h) => h.hook === 'tc-egress')!;
        assert.equal(afterRepair.attached, true);
        assert.equal(afterRepair.linkId, before.linkId, 'the same link');
        assert.notEqual(afterRepair.progId, before.progId, 'a new dispatcher in it');
      }
      await ctl('load', 'mark', '--dev', dev, '--dscp', 'ef');
      if (attach === 'cls_bpf') {
        const egressFilters = (await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'egress'])).stdout;
        assert.equal(egressFilters.match(/handle 0x1717/g)?.length, 1, 'one dispatcher filter');
      } else {
        const progs = await tcxProgs();
        assert.deepEqual([names(progs.ingress), names(progs.egress)], [['itm_dispatch'], ['itm_dispatch']], 'one dispatcher per hook');
      }
      assertAll(
        await onTheWire('udp', () => udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 20, ratePps: 200 })),
        EF,
        'after repair',
      );

      const ids = (await list())[0]!.hooks.map((h) => h.progId!).filter(Boolean);
      await ctl('down', '--dev', dev);
      const ingress = (await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'ingress'])).stdout;
      assert.doesNotMatch(ingress, /itm_dispatch/);
      assert.match(ingress, /u32/, "the other tool's filter is still there");
      assert.equal((await topo.exec('itm', ['tc', 'filter', 'show', 'dev', dev, 'egress'])).stdout.trim(), '');
      assert.deepEqual(await tcxProgs(), { ingress: [], egress: [] }, 'no tcx link left');
      assert.equal(existsSync(pinDir(topo, 'itm')), false, 'no pins left');
      assert.equal(existsSync(join(RUN_DIR, 'state', String(topo.netnsInode('itm')))), false, 'no record left');
      // the kernel frees programs once their last reference goes (a prog array is cleared by a
      // deferred work item), so allow it a moment
      const deadline = Date.now() + 5000;
      let left: number[] = ids;
      while (left.length && Date.now() < deadline) {
        left = ids.filter((id) => {
          try {
            BpfProgram.fromId(id).close();
            return true;
          } catch {
            return false;
          }
        });
        if (left.length) await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(left, [], 'the dispatcher programs are gone from the kernel');
      const bpftool = await topo.exec('itm', ['bpftool', 'prog', 'show']);
      for (const id of ids) assert.doesNotMatch(bpftool.stdout, new RegExp(`^${id}:`, 'm'));
      assert.deepEqual(await list(), [], 'list shows nothing');
    });
  });
}
