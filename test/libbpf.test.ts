// Tests for the libbpf binding (src/libbpf). Needs root: it loads programs, mounts a private bpffs
// and attaches tc/XDP programs to a veth pair inside a network namespace of its own. Nothing is
// ever attached to the host's interfaces: that work runs in a child process (this same file, in
// child mode) started under `ip netns exec`.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  atomicAddU64,
  atomicRaiseU64,
  BPF_LINK_TYPE,
  BPF_MAP_FLAG,
  BPF_MAP_TYPE,
  BPF_PROG_TYPE,
  BPF_TCX,
  BpfError,
  BpfLink,
  BpfMap,
  BpfObject,
  BpfProgram,
  ARPHRD,
  ethtool,
  ifIndexToName,
  ifNameToIndex,
  isBpffs,
  isEthernet,
  link,
  route,
  linkType,
  linkTypeName,
  mountBpffs,
  NotSupportedError,
  numPossibleCpus,
  summarizeLog,
  tc,
  tcFilterCount,
  tcFilters,
  tcx,
  xdp,
} from '../src/libbpf/index.js';
import { native } from '../src/libbpf/native.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const THIS_FILE = fileURLToPath(import.meta.url);
const CHILD_ENV = 'LIBBPF_TEST_NETNS_CHILD';
const LINK_CHILD_ENV = 'LIBBPF_TEST_LINK_CHILD';

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function i32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
}

function u64(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Sum of the u64 slots of a per-CPU value buffer (each slot 8 bytes here). */
function perCpuSum(v: Buffer): number {
  let sum = 0n;
  for (let off = 0; off < v.length; off += 8) sum += v.readBigUInt64LE(off);
  return Number(sum);
}

function lpmKey(prefixlen: number, addr: [number, number, number, number]): Buffer {
  return Buffer.concat([u32(prefixlen), Buffer.from(addr)]);
}

function expectBpfError(fn: () => unknown, code: string, step?: string): BpfError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof BpfError, `expected a BpfError ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.ok(caught.errno > 0);
  if (step !== undefined) assert.equal(caught.step, step);
  return caught;
}

// ---------------------------------------------------------------------------------------------
// Child mode: runs inside the test namespace, does the netlink work, prints one JSON line.

interface NetnsReport {
  ifA: number;
  progId: number;
  prog2Id: number;
  xdpProgId: number;
  created1: boolean;
  created2: boolean;
  queryBefore: number | null;
  attachId: number;
  queryAttached: number | null;
  queryEgress: number | null;
  duplicateCode: string | null;
  replaceId: number;
  queryReplaced: number | null;
  filterShow: string;
  runsSeen: number;
  queryDetached: number | null;
  detachMissingCode: string | null;
  qdiscAfterDestroy: string;
  xdpNone: string | null;
  xdpGeneric: { progId: number; mode: string } | null;
  xdpBusyCode: string | null;
  xdpReplaced: { progId: number; mode: string } | null;
  xdpAfterDetach: string | null;
  xdpNative: { progId: number; mode: string } | null;
  xdpAfterNativeDetach: string | null;
}

function errCode(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (err) {
    return err instanceof BpfError ? err.code : `not a BpfError: ${String(err)}`;
  }
}

async function runNetnsChild(objPath: string): Promise<void> {
  const ifA = ifNameToIndex('a');
  execFileSync('ip', ['link', 'set', 'dev', 'a', 'up']);
  execFileSync('ip', ['link', 'set', 'dev', 'b', 'up']);
  execFileSync('ip', ['addr', 'add', '10.231.0.1/24', 'dev', 'b']);

  const obj = BpfObject.open(objPath);
  obj.setGlobal('ret_value', i32(0));
  obj.load();
  const prog = obj.program('fixture_return_global');
  const xdpProg = obj.program('fixture_xdp_pass');
  const runs = obj.map('fx_percpu');
  const obj2 = BpfObject.open(objPath);
  obj2.load();
  const prog2 = obj2.program('fixture_return_global');
  const id = { handle: 1, priority: 1 };

  const created1 = tc.hookCreate(ifA, 'ingress').created;
  const created2 = tc.hookCreate(ifA, 'egress').created;
  const queryBefore = tc.query(ifA, 'ingress', id)?.progId ?? null;
  const attachId = tc.attach(ifA, 'ingress', prog.fd, id).progId;
  const queryAttached = tc.query(ifA, 'ingress', id)?.progId ?? null;
  const queryEgress = tc.query(ifA, 'egress', id)?.progId ?? null;
  const duplicateCode = errCode(() => tc.attach(ifA, 'ingress', prog2.fd, id));
  const replaceId = tc.attach(ifA, 'ingress', prog2.fd, { ...id, replace: true }).progId;
  const queryReplaced = tc.query(ifA, 'ingress', id)?.progId ?? null;
  tc.attach(ifA, 'ingress', prog.fd, { ...id, replace: true });
  const filterShow = execFileSync('tc', ['filter', 'show', 'dev', 'a', 'ingress'], { encoding: 'utf8' });

  // Datagrams to an unresolved neighbour on b's subnet make b send ARP requests, which arrive on
  // a's ingress and run the attached program.
  const sock = dgram.createSocket('udp4');
  let runsSeen = 0;
  for (let i = 0; i < 40 && runsSeen === 0; i++) {
    await new Promise<void>((resolve) => sock.send('x', 9, `10.231.0.${2 + (i % 200)}`, () => resolve()));
    await sleep(50);
    runsSeen = perCpuSum(runs.lookup(u32(0)) ?? Buffer.alloc(8));
  }
  sock.close();

  tc.detach(ifA, 'ingress', id);
  const queryDetached = tc.query(ifA, 'ingress', id)?.progId ?? null;
  const detachMissingCode = errCode(() => tc.detach(ifA, 'ingress', id));
  tc.hookDestroy(ifA);
  const qdiscAfterDestroy = execFileSync('tc', ['qdisc', 'show', 'dev', 'a'], { encoding: 'utf8' });

  const xdpNone = xdp.query(ifA) === undefined ? null : 'attached';
  xdp.attach(ifA, xdpProg.fd, { mode: 'generic' });
  const xdpGeneric = xdp.query(ifA) ?? null;
  const xdpBusyCode = errCode(() => xdp.attach(ifA, xdpProg.fd, { mode: 'generic' }));
  const xdpProg2 = obj2.program('fixture_xdp_pass');
  xdp.attach(ifA, xdpProg2.fd, { mode: 'generic', replace: true });
  const xdpReplaced = xdp.query(ifA) ?? null;
  xdp.detach(ifA);
  const xdpAfterDetach = xdp.query(ifA) === undefined ? null : 'attached';
  xdp.attach(ifA, xdpProg.fd, { mode: 'native' });
  const xdpNative = xdp.query(ifA) ?? null;
  xdp.detach(ifA, { mode: 'native' });
  const xdpAfterNativeDetach = xdp.query(ifA) === undefined ? null : 'attached';

  const report: NetnsReport = {
    ifA,
    progId: prog.id,
    prog2Id: prog2.id,
    xdpProgId: xdpProg.id,
    created1,
    created2,
    queryBefore,
    attachId,
    queryAttached,
    queryEgress,
    duplicateCode,
    replaceId,
    queryReplaced,
    filterShow,
    runsSeen,
    queryDetached,
    detachMissingCode,
    qdiscAfterDestroy,
    xdpNone,
    xdpGeneric,
    xdpBusyCode,
    xdpReplaced,
    xdpAfterDetach,
    xdpNative,
    xdpAfterNativeDetach,
  };
  for (const h of [prog, prog2, xdpProg, xdpProg2, runs]) h.close();
  obj.close();
  obj2.close();
  process.stdout.write(`REPORT ${JSON.stringify(report)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Link child mode: devices, tc filter lists and ethtool features through the addon, inside a
// namespace of its own that starts with only `lo`. Each section asserts on its own; the report
// says which passed, and how the others failed.

function linkSections(objPath: string): Record<string, () => void> {
  const missing = 'nosuchdev0';
  const byName = (n: string) => link.list().find((l) => l.name === n);
  const feature = (dev: string, name: string) => {
    const f = ethtool.features(dev).find((x) => x.name === name);
    assert.ok(f !== undefined, `${dev} has a feature ${name}`);
    return f;
  };
  return {
    'a veth pair is made with the MTU and queues of each end, down, and listed': () => {
      link.createVeth({ name: 'la', mtu: 3400, txQueues: 1, rxQueues: 1 }, { name: 'lb', mtu: 9000 });
      const a = byName('la');
      const b = byName('lb');
      assert.ok(a && b, `both ends listed: ${JSON.stringify(link.list())}`);
      assert.equal(a.kind, 'veth');
      assert.equal(b.kind, 'veth');
      assert.equal(a.type, ARPHRD.ETHER);
      assert.equal(a.mtu, 3400);
      assert.equal(b.mtu, 9000);
      assert.equal(a.up, false);
      assert.equal(b.up, false);
      assert.equal(a.link, b.ifindex, "a veth's IFLA_LINK is its peer");
      assert.equal(b.link, a.ifindex);
      assert.equal(ifNameToIndex('la'), a.ifindex);
      assert.deepEqual(link.get('lb'), b);
      assert.deepEqual(link.get(b.ifindex), b);
      const lo = byName('lo');
      assert.ok(lo !== undefined && lo.kind === undefined, 'lo is listed, and has no kind');
      const q = execFileSync('ip', ['-d', 'link', 'show', 'la'], { encoding: 'utf8' });
      assert.match(q, /numtxqueues 1 numrxqueues 1/);
    },
    'set up and MTU, by name and by index': () => {
      link.setUp('la');
      link.set(link.get('lb').ifindex, { up: true, mtu: 1500 });
      assert.equal(link.get('la').up, true);
      assert.equal(link.get('lb').up, true);
      assert.equal(link.get('lb').mtu, 1500);
      link.set('lb', { up: false });
      assert.equal(link.get('lb').up, false);
      assert.equal(link.get('lb').mtu, 1500, 'the MTU is left alone when not given');
      link.setUp('lb');
    },
    'the route to an address, as `ip route get` has it; none when unreachable': () => {
      execFileSync('ip', ['addr', 'add', '10.77.0.1/24', 'dev', 'la']);
      execFileSync('ip', ['route', 'add', '10.78.0.0/16', 'via', '10.77.0.2']);
      const la = ifNameToIndex('la');
      assert.deepEqual(route.get('10.77.0.9'), { ifindex: la, unicast: true, src: '10.77.0.1', gateway: undefined });
      assert.deepEqual(route.get('10.78.1.1'), { ifindex: la, unicast: true, src: '10.77.0.1', gateway: '10.77.0.2' });
      assert.equal(route.get('10.77.0.1')?.unicast, false, 'a local address is no unicast route');
      assert.equal(route.get('10.99.0.1'), undefined, 'no default route here');
      assert.throws(() => route.get('10.77.0'), /IPv4 address/);
      // carrier: a veth has it while its peer is up
      assert.equal(link.get('la').lowerUp, true);
      link.set('lb', { up: false });
      try {
        assert.equal(link.get('la').lowerUp, false);
      } finally {
        link.setUp('lb');
      }
    },
    'the link type: Ethernet for a veth, not for lo': () => {
      assert.equal(linkType(ifNameToIndex('la')), ARPHRD.ETHER);
      assert.equal(isEthernet(ifNameToIndex('la')), true);
      assert.equal(linkType(ifNameToIndex('lo')), ARPHRD.LOOPBACK);
      assert.equal(isEthernet(ifNameToIndex('lo')), false);
      assert.equal(linkTypeName(linkType('la')), 'ether');
      assert.equal(linkTypeName(linkType('lo')), 'loopback');
      assert.equal(linkTypeName(0x1234), 'ARPHRD 4660');
      expectBpfError(() => linkType(99999), 'ENODEV', 'RTM_GETLINK');
    },
    'an existing name is EEXIST, naming both ends': () => {
      const err = expectBpfError(() => link.createVeth({ name: 'la' }, { name: 'lc' }), 'EEXIST', 'RTM_NEWLINK');
      assert.match(err.message, /^create veth la \(peer lc\): RTM_NEWLINK: File exists \(EEXIST\)/);
      assert.equal(byName('lc'), undefined, 'nothing half made');
      const long = expectBpfError(() => link.createVeth({ name: 'a-name-too-long-for-linux' }, { name: 'lc' }), 'EINVAL');
      assert.match(long.message, /'a-name-too-long-for-linux' is not a valid interface name/);
    },
    'a missing device is ENODEV, naming it': () => {
      for (const [fn, step] of [
        [() => link.delete(missing), 'RTM_DELLINK'],
        [() => link.get(missing), 'RTM_GETLINK'],
        [() => link.set(missing, { up: true }), 'RTM_NEWLINK'],
        [() => ethtool.features(missing), 'ETHTOOL_GSSET_INFO'],
        [() => ethtool.setFeatures(missing, { 'rx-gro': true }), 'ETHTOOL_GSSET_INFO'],
      ] as const) {
        const err = expectBpfError(fn, 'ENODEV', step);
        assert.match(err.message, new RegExp(`${missing}.*No such device \\(ENODEV\\)`));
      }
      assert.equal(link.exists(missing), false);
      assert.equal(link.exists('la'), true);
    },
    "the kernel's extended ack rides along": () => {
      const err = expectBpfError(() => link.set('la', { mtu: 70000 }), 'EINVAL', 'RTM_NEWLINK');
      assert.match(err.log ?? '', /Kernel error message: .*mtu/i, `log: ${String(err.log)}`);
      assert.match(err.message, /^set link la: RTM_NEWLINK: Invalid argument \(EINVAL\)\n {4}Kernel error message: /);
    },
    'ethtool features: get, set off and back on, rx-gro on, each read back': () => {
      const all = ethtool.features('la');
      assert.ok(all.length > 30, `features: ${all.length}`);
      assert.equal(new Set(all.map((f) => f.name)).size, all.length, 'names are unique');
      const tso = feature('la', 'tx-tcp-segmentation');
      assert.equal(tso.active, true, 'a veth has TSO on');
      assert.equal(tso.fixed, false);
      ethtool.setFeatures('la', { 'tx-tcp-segmentation': false });
      assert.equal(feature('la', 'tx-tcp-segmentation').active, false);
      assert.equal(feature('lb', 'tx-tcp-segmentation').active, true, 'the peer is left alone');
      const q = execFileSync('ethtool', ['-k', 'la'], { encoding: 'utf8' });
      assert.match(q, /^\s+tx-tcp-segmentation: off$/m, 'ethtool agrees');
      ethtool.setFeatures('la', { 'tx-tcp-segmentation': true });
      assert.equal(feature('la', 'tx-tcp-segmentation').active, true);
      assert.equal(feature('la', 'rx-gro').active, false, 'a veth has GRO off');
      ethtool.setFeatures('la', { 'rx-gro': true });
      assert.equal(feature('la', 'rx-gro').active, true);
      assert.match(execFileSync('ethtool', ['-k', 'la'], { encoding: 'utf8' }), /^generic-receive-offload: on$/m);
    },
    'ethtool: an unknown name is refused before any change; a fixed one is not changed': () => {
      const before = ethtool.features('la');
      const err = expectBpfError(() => ethtool.setFeatures('la', { 'rx-gro': false, gro: true }), 'EINVAL');
      assert.match(err.message, /no feature named 'gro'/);
      assert.deepEqual(ethtool.features('la'), before, 'nothing changed');
      const fixed = before.find((f) => f.fixed && !f.active);
      assert.ok(fixed !== undefined, 'a veth has a feature fixed off');
      let caught: unknown;
      try {
        ethtool.setFeatures('la', { [fixed.name]: true });
      } catch (e) {
        caught = e;
      }
      assert.ok(caught instanceof NotSupportedError, String(caught));
      assert.equal(caught.code, 'EOPNOTSUPP');
      assert.match(caught.message, new RegExp(`^ethtool set features of la: ${fixed.name} off \\[fixed\\] left as they were`));
      assert.equal(feature('la', fixed.name).active, false);
    },
    'tc filters: none without clsact, one after an attach, none after its detach': () => {
      const ia = ifNameToIndex('la');
      assert.deepEqual(tcFilters(ia, 'ingress'), []);
      assert.equal(tcFilterCount(ia, 'ingress'), 0);
      tc.hookCreate(ia, 'ingress');
      assert.equal(tcFilterCount(ia, 'ingress'), 0, 'an empty clsact');
      assert.equal(tcFilterCount(ia, 'egress'), 0);
      const obj = BpfObject.open(objPath);
      try {
        obj.setGlobal('ret_value', i32(0));
        obj.load();
        const prog = obj.program('fixture_return_global');
        tc.attach(ia, 'ingress', prog.fd, { handle: 7, priority: 3 });
        prog.close();
      } finally {
        obj.close();
      }
      assert.equal(tcFilterCount(ia, 'ingress'), 1);
      assert.equal(tcFilterCount(ia, 'egress'), 0, 'the other direction has none');
      const rows = tcFilters(ia, 'ingress');
      const f = rows.find((r) => r.handle !== 0);
      assert.deepEqual(f, { kind: 'bpf', priority: 3, protocol: 3, handle: 7, chain: 0 }, JSON.stringify(rows));
      tc.detach(ia, 'ingress', { handle: 7, priority: 3 });
      assert.equal(tcFilterCount(ia, 'ingress'), 0);
      tc.hookDestroy(ia);
      assert.equal(tcFilterCount(ia, 'ingress'), 0);
      const err = expectBpfError(() => tcFilterCount(99999, 'egress'), 'ENODEV');
      assert.match(err.message, /^tc filters of ifindex 99999\/egress: /);
    },
    'tcx: links first and last in order, the same program twice refused, update in place, detach': () => {
      const ia = ifNameToIndex('la');
      if (!tcx.supported()) {
        expectBpfError(() => tcx.query(ia, 'ingress'), 'EINVAL');
        return;
      }
      assert.deepEqual(tcx.query(ia, 'egress').entries, []);
      const objs = [0, 1, 2].map(() => {
        const o = BpfObject.open(objPath);
        o.setGlobal('ret_value', i32(-1));
        o.load();
        return o;
      });
      const [p1, p2, p3] = objs.map((o) => o.program('fixture_return_global')) as [BpfProgram, BpfProgram, BpfProgram];
      try {
        const l1 = tcx.attach(ia, 'egress', p1, { where: 'first' });
        const l2 = tcx.attach(ia, 'egress', p2, { where: 'first' });
        assert.equal(l1.type, BPF_LINK_TYPE.TCX);
        assert.deepEqual(l1.info(), { progId: p1.id, ifindex: ia, attachType: BPF_TCX.EGRESS });
        const q = tcx.query(ia, 'egress');
        assert.deepEqual(q.entries, [
          { progId: p2.id, linkId: l2.id },
          { progId: p1.id, linkId: l1.id },
        ]);
        assert.deepEqual(tcx.query(ia, 'ingress').entries, [], 'the other direction has none');
        const dup = expectBpfError(() => tcx.attach(ia, 'egress', p1, { where: 'last' }), 'EEXIST', 'BPF_LINK_CREATE');
        assert.match(dup.message, /^tcx attach la\(\d+\)\/egress: /);
        expectBpfError(() => tcx.attach(ia, 'egress', p3, { expectedRevision: q.revision + 5n }), 'ESTALE');
        // in place: the link keeps its position; with an old program that is not attached, nothing changes
        expectBpfError(() => l1.update(p3, { old: p2 }), 'EPERM', 'bpf_link_update');
        l1.update(p3, { old: p1 });
        assert.deepEqual(
          tcx.query(ia, 'egress').entries.map((e) => e.progId),
          [p2.id, p3.id],
        );
        l2.detach();
        assert.equal(l2.info().ifindex, 0, 'a detached link is defunct');
        assert.deepEqual(tcx.query(ia, 'egress').entries, [{ progId: p3.id, linkId: l1.id }]);
        const again = BpfLink.fromId(l1.id);
        assert.equal(again.info().progId, p3.id);
        again.close();
        l1.close(); // its last fd: the program is detached
        l2.close();
        assert.deepEqual(tcx.query(ia, 'egress').entries, []);
        expectBpfError(() => tcx.query(99999, 'egress'), 'ENXIO', 'BPF_PROG_QUERY');
      } finally {
        for (const p of [p1, p2, p3]) p.close();
        for (const o of objs) o.close();
      }
    },
    'deleting one end deletes the pair': () => {
      link.delete('la');
      assert.equal(byName('la'), undefined);
      assert.equal(byName('lb'), undefined);
      assert.deepEqual(
        link.list().map((l) => l.name),
        ['lo'],
      );
    },
  };
}

function runLinkChild(objPath: string): void {
  const report: Record<string, string> = {};
  for (const [name, fn] of Object.entries(linkSections(objPath))) {
    try {
      fn();
      report[name] = 'ok';
    } catch (err) {
      report[name] = err instanceof Error ? (err.stack ?? err.message) : String(err);
    }
  }
  process.stdout.write(`REPORT ${JSON.stringify(report)}\n`);
}

const childObject = process.env[CHILD_ENV];
const linkChildObject = process.env[LINK_CHILD_ENV];
if (childObject !== undefined) {
  await runNetnsChild(childObject);
} else if (linkChildObject !== undefined) {
  runLinkChild(linkChildObject);
} else {
  registerTests();
}

// ---------------------------------------------------------------------------------------------

function registerTests(): void {
  let work = '';
  let fixture = '';
  let reject = '';
  let bpffs = '';

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'itm-libbpf-test-'));
    // Generated per run so the fixture matches the running kernel's types.
    const vmlinux = execFileSync('bpftool', ['btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'c'], {
      maxBuffer: 256 * 1024 * 1024,
    });
    writeFileSync(join(work, 'vmlinux.h'), vmlinux);
    const compile = (name: string): string => {
      const out = join(work, `${name}.bpf.o`);
      execFileSync('clang', ['-O2', '-g', '-target', 'bpf', '-I', work, '-c', join(ROOT, 'test', 'fixtures', `${name}.bpf.c`), '-o', out]);
      return out;
    };
    fixture = compile('libbpf_fixture');
    reject = compile('libbpf_reject');
  });

  after(() => {
    if (bpffs !== '' && isBpffs(bpffs)) execFileSync('umount', [bpffs]);
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  function loadFixture(retValue = 0): BpfObject {
    const obj = BpfObject.open(fixture);
    obj.setGlobal('ret_value', i32(retValue));
    obj.load();
    return obj;
  }

  test('TypeScript constants match the UAPI headers the addon was built with', () => {
    const c = native.constants();
    const tsMapTypes: Record<string, number> = BPF_MAP_TYPE;
    const tsProgTypes: Record<string, number> = BPF_PROG_TYPE;
    const tsMapFlags: Record<string, number> = BPF_MAP_FLAG;
    for (const [k, v] of Object.entries(c.mapTypes)) assert.equal(tsMapTypes[k], v, `BPF_MAP_TYPE.${k}`);
    for (const [k, v] of Object.entries(c.progTypes)) assert.equal(tsProgTypes[k], v, `BPF_PROG_TYPE.${k}`);
    for (const [k, v] of Object.entries(c.mapFlags)) assert.equal(tsMapFlags[k], v, `BPF_MAP_FLAG.${k}`);
    assert.ok(Object.keys(c.mapTypes).length >= 30);
  });

  test('open lists programs, maps and globals without loading', () => {
    const obj = BpfObject.open(fixture);
    try {
      assert.equal(obj.path, fixture);
      assert.equal(obj.name, 'libbpf_fixture');
      assert.deepEqual(obj.programNames().sort(), ['fixture_return_global', 'fixture_xdp_pass']);
      const maps = obj.mapNames();
      for (const m of ['fx_hash', 'fx_percpu', 'fx_lpm']) assert.ok(maps.includes(m), `${m} in ${maps.join()}`);
      for (const sec of ['.rodata', '.data', '.bss']) {
        assert.ok(
          maps.some((m) => m.endsWith(sec)),
          `internal map for ${sec} in ${maps.join()}`,
        );
      }
      assert.deepEqual(obj.globalInfo('ret_value'), { section: '.rodata', offset: 0, size: 4 });
      assert.equal(obj.globalInfo('data_counter')?.section, '.data');
      assert.deepEqual(obj.globalInfo('bss_runs'), { section: '.bss', offset: 0, size: 8 });
      assert.equal(obj.globalInfo('no_such_global'), undefined);
    } finally {
      obj.close();
    }
  });

  test('open of a missing file throws a BpfError naming the path and step', () => {
    const err = expectBpfError(() => BpfObject.open(join(work, 'missing.bpf.o')), 'ENOENT', 'bpf_object__open_file');
    assert.match(err.message, /^open .*missing\.bpf\.o: bpf_object__open_file: /);
    assert.equal(err.errno, 2);
  });

  test('the dispatcher loads with its CO-RE resolved against a minimal kernel BTF (open with btf)', () => {
    const dispatcher = join(ROOT, 'bpf', 'build', 'dispatcher.bpf.o');
    const min = join(work, 'dispatcher.min.btf');
    execFileSync('bpftool', ['gen', 'min_core_btf', '/sys/kernel/btf/vmlinux', min, dispatcher]);
    const obj = BpfObject.open(dispatcher, { btf: min });
    try {
      obj.load();
      const p = obj.program('itm_dispatch');
      assert.equal(p.type, BPF_PROG_TYPE.SCHED_CLS);
      p.close();
    } finally {
      obj.close();
    }
  });

  test('setGlobal before load decides what the program returns', () => {
    for (const value of [2, 7]) {
      const obj = loadFixture(value);
      const prog = obj.program('fixture_return_global');
      try {
        const res = prog.testRun({ data: Buffer.alloc(64), repeat: 3 });
        assert.equal(res.retval, value);
        assert.ok(res.duration >= 0);
        assert.equal(res.data.length, 64);
        assert.equal(prog.name, 'fixture_return_global');
        assert.equal(prog.type, BPF_PROG_TYPE.SCHED_CLS);
        assert.match(prog.tag, /^[0-9a-f]{16}$/);
        assert.ok(prog.id > 0);
        assert.equal(obj.map('.rodata').lookup(u32(0))?.readInt32LE(0), value);
      } finally {
        prog.close();
        obj.close();
      }
    }
  });

  test('setGlobal works for .data and .bss, and the program updates them', () => {
    const obj = BpfObject.open(fixture);
    obj.setGlobal('data_counter', i32(40));
    obj.setGlobal('bss_runs', u64(1000));
    obj.load();
    const prog = obj.program('fixture_return_global');
    const data = obj.map('.data');
    const bss = obj.map('.bss');
    try {
      prog.testRun({ data: Buffer.alloc(64), repeat: 5 });
      assert.equal(data.lookup(u32(0))?.readInt32LE(0), 45);
      assert.equal(bss.lookup(u32(0))?.readBigUInt64LE(0), 1005n);
    } finally {
      for (const h of [prog, data, bss]) h.close();
      obj.close();
    }
  });

  test('setGlobal rejects unknown names, wrong sizes and late calls', () => {
    const obj = BpfObject.open(fixture);
    try {
      const unknown = expectBpfError(() => obj.setGlobal('no_such_global', i32(1)), 'ENOENT');
      assert.match(unknown.message, /no_such_global/);
      const size = expectBpfError(() => obj.setGlobal('ret_value', u64(1)), 'EINVAL');
      assert.match(size.message, /ret_value.*4 bytes/);
      obj.load();
      expectBpfError(() => obj.setGlobal('ret_value', i32(1)), 'EBUSY');
      expectBpfError(() => obj.setMaxEntries('fx_hash', 8), 'EBUSY');
      expectBpfError(() => obj.load(), 'EBUSY');
    } finally {
      obj.close();
    }
  });

  test('testRun passes the context in and out', () => {
    const obj = loadFixture(3);
    const prog = obj.program('fixture_return_global');
    try {
      const ctx = Buffer.alloc(192); // struct __sk_buff; zeros are accepted for every field
      const res = prog.testRun({ data: Buffer.alloc(64), ctx });
      assert.equal(res.retval, 3);
      assert.ok(res.ctx !== undefined);
      assert.equal(res.ctx.readUInt32LE(8), 103, 'skb->mark written by the program'); // offsetof(mark)
      const short = expectBpfError(() => prog.testRun({ data: Buffer.alloc(4) }), 'EINVAL', 'bpf_prog_test_run_opts');
      assert.match(short.message, /fixture_return_global/);
    } finally {
      prog.close();
      obj.close();
    }
  });

  test('program and map handles outlive the object; close is idempotent', () => {
    const obj = loadFixture(4);
    const prog = obj.program('fixture_return_global');
    const map = obj.map('fx_hash');
    obj.close();
    obj.close();
    try {
      assert.equal(prog.testRun({ data: Buffer.alloc(64) }).retval, 4);
      map.update(u32(1), u64(2));
      assert.deepEqual(map.lookup(u32(1)), u64(2));
      expectBpfError(() => obj.program('fixture_return_global'), 'EBADF');
      const byId = BpfProgram.fromId(prog.id);
      assert.equal(byId.tag, prog.tag);
      assert.equal(byId.type, prog.type);
      byId.close();
      const mapById = BpfMap.fromId(map.id);
      assert.deepEqual(mapById.lookup(u32(1)), u64(2));
      mapById.close();
    } finally {
      prog.close();
      map.close();
    }
    assert.equal(prog.fd, -1);
    prog.close();
    expectBpfError(() => prog.testRun({ data: Buffer.alloc(64) }), 'EBADF');
    expectBpfError(() => map.lookup(u32(1)), 'EBADF');
  });

  test('a verifier rejection throws BpfError with the verifier log', () => {
    const obj = BpfObject.open(reject);
    try {
      const err = expectBpfError(() => obj.load(), 'EACCES', 'bpf_object__load');
      assert.equal(err.errno, 13);
      assert.ok(!(err instanceof NotSupportedError));
      assert.ok(typeof err.log === 'string' && err.log.length > 0);
      assert.match(err.log, /BEGIN PROG LOAD LOG/);
      assert.match(err.log, /invalid access to packet/);
      assert.match(err.message, /^load libbpf_reject\.bpf\.o: bpf_object__load: Permission denied \(EACCES\)/);
      assert.match(err.message, /invalid access to packet/);
      assert.doesNotMatch(err.message, /processed \d+ insns|BEGIN PROG LOAD LOG/);
      assert.ok(err.message.split('\n').length <= 4, err.message);
    } finally {
      obj.close();
    }
  });

  test('summarizeLog keeps the verdict, not the statistics', () => {
    const log = [
      "libbpf: prog 'p': -- BEGIN PROG LOAD LOG --",
      '0: R1=ctx() R10=fp0',
      '1: (61) r0 = *(u32 *)(r1 +0)',
      'invalid access to packet',
      'processed 2 insns (limit 1000000) max_states_per_insn 0',
      '-- END PROG LOAD LOG --',
      "libbpf: failed to load object 'x'",
    ].join('\n');
    assert.deepEqual(summarizeLog(log), ['0: R1=ctx() R10=fp0', '1: (61) r0 = *(u32 *)(r1 +0)', 'invalid access to packet']);
    assert.deepEqual(summarizeLog('libbpf: map "m": failed to create: -22\n'), ['map "m": failed to create: -22']);
  });

  test('unknown program and map names throw ENOENT listing what exists', () => {
    const obj = BpfObject.open(fixture);
    try {
      const p = expectBpfError(() => obj.program('nope'), 'ENOENT', 'bpf_object__find_program_by_name');
      assert.match(p.message, /libbpf_fixture\.bpf\.o: no program named "nope".*fixture_return_global/);
      const m = expectBpfError(() => obj.map('nope'), 'ENOENT', 'bpf_object__find_map_by_name');
      assert.match(m.message, /no map named "nope".*fx_hash/);
      expectBpfError(() => obj.setMaxEntries('nope', 4), 'ENOENT');
      expectBpfError(() => obj.program('fixture_return_global'), 'EINVAL', 'bpf_program__fd'); // not loaded yet
    } finally {
      obj.close();
    }
  });

  test('hash map lookup/update/delete/keys/entries', () => {
    const obj = loadFixture();
    const map = obj.map('fx_hash');
    obj.close();
    try {
      assert.equal(map.name, 'fx_hash');
      assert.equal(map.type, BPF_MAP_TYPE.HASH);
      assert.equal(map.keySize, 4);
      assert.equal(map.valueSize, 8);
      assert.equal(map.maxEntries, 64);
      assert.equal(map.perCpu, false);
      assert.equal(map.valueBufferSize, 8);
      assert.equal(map.lookup(u32(7)), undefined);
      assert.deepEqual(map.keys(), []);
      assert.deepEqual(map.entries(), []);
      for (let i = 0; i < 10; i++) map.update(u32(i), u64(i * 100));
      assert.deepEqual(map.lookup(u32(7)), u64(700));
      expectBpfError(() => map.update(u32(7), u64(1), 'noexist'), 'EEXIST', 'bpf_map_update_elem');
      expectBpfError(() => map.update(u32(70), u64(1), 'exist'), 'ENOENT', 'bpf_map_update_elem');
      map.update(u32(7), u64(701), 'exist');
      assert.deepEqual(map.lookup(u32(7)), u64(701));
      assert.equal(map.delete(u32(3)), true);
      assert.equal(map.delete(u32(3)), false);
      const keys = map
        .keys()
        .map((k) => k.readUInt32LE(0))
        .sort((a, b) => a - b);
      assert.deepEqual(keys, [0, 1, 2, 4, 5, 6, 7, 8, 9]);
      const entries = new Map(map.entries().map(([k, v]) => [k.readUInt32LE(0), Number(v.readBigUInt64LE(0))]));
      assert.equal(entries.size, 9);
      assert.equal(entries.get(7), 701);
      assert.equal(entries.get(9), 900);
      const bad = expectBpfError(() => map.lookup(Buffer.alloc(2)), 'EINVAL', 'bpf_map_lookup_elem');
      assert.match(bad.message, /fx_hash.*key is 2 bytes, map expects 4/);
      expectBpfError(() => map.update(u32(1), u32(1)), 'EINVAL');
    } finally {
      map.close();
    }
  });

  test('per-CPU array values carry one slot per possible CPU', () => {
    const obj = loadFixture();
    const prog = obj.program('fixture_return_global');
    const map = obj.map('fx_percpu');
    try {
      const cpus = numPossibleCpus();
      assert.ok(cpus >= 1);
      assert.equal(map.perCpu, true);
      assert.equal(map.valueBufferSize, 8 * cpus);
      prog.testRun({ data: Buffer.alloc(64), repeat: 25 });
      const v = map.lookup(u32(0));
      assert.equal(v?.length, 8 * cpus);
      assert.equal(perCpuSum(v ?? Buffer.alloc(0)), 25);
      const slots = Buffer.alloc(8 * cpus);
      for (let c = 0; c < cpus; c++) slots.writeBigUInt64LE(BigInt(c + 1), c * 8);
      map.update(u32(2), slots);
      assert.deepEqual(map.lookup(u32(2)), slots);
      const entries = map.entries();
      assert.equal(entries.length, 4);
      const two = entries.find(([k]) => k.readUInt32LE(0) === 2);
      assert.deepEqual(two?.[1], slots);
      assert.equal(perCpuSum(entries.find(([k]) => k.readUInt32LE(0) === 0)?.[1] ?? Buffer.alloc(0)), 25);
      expectBpfError(() => map.update(u32(1), u64(1)), 'EINVAL');
    } finally {
      prog.close();
      map.close();
      obj.close();
    }
  });

  test('an mmapable array is shared memory: atomic add and raise agree with the syscalls', () => {
    const map = BpfMap.create({ type: BPF_MAP_TYPE.ARRAY, keySize: 4, valueSize: 12, maxEntries: 3, flags: BPF_MAP_FLAG.MMAPABLE });
    try {
      const { mem, stride } = map.mmap();
      assert.equal(stride, 16);
      assert.equal(atomicAddU64(mem, stride * 2, 5n), 0n);
      assert.equal(atomicAddU64(mem, stride * 2, 2n), 5n);
      assert.equal(map.lookup(u32(2))!.readBigUInt64LE(0), 7n, 'the kernel sees what was written');
      map.update(u32(1), Buffer.concat([u64(40), Buffer.alloc(4)]));
      assert.equal(mem.readBigUInt64LE(stride), 40n, 'and the other way');
      assert.equal(atomicRaiseU64(mem, stride, 39n), false);
      assert.equal(atomicRaiseU64(mem, stride, 40n), false);
      assert.equal(atomicRaiseU64(mem, stride, 41n), true);
      assert.equal(map.lookup(u32(1))!.readBigUInt64LE(0), 41n);
      assert.throws(() => atomicAddU64(mem, 4, 1n), /not an aligned 8-byte word/);
      assert.throws(() => atomicAddU64(mem, stride * 3, 1n), /not an aligned 8-byte word/);
    } finally {
      map.close();
    }
    const plain = BpfMap.create({ type: BPF_MAP_TYPE.ARRAY, keySize: 4, valueSize: 8, maxEntries: 1 });
    try {
      assert.throws(() => plain.mmap(), /only an array map made with BPF_F_MMAPABLE/);
    } finally {
      plain.close();
    }
  });

  test('LPM trie: longest-prefix lookup and entries without batch support', () => {
    const obj = loadFixture();
    const map = obj.map('fx_lpm');
    obj.close();
    try {
      assert.equal(map.type, BPF_MAP_TYPE.LPM_TRIE);
      map.update(lpmKey(8, [10, 0, 0, 0]), u32(8));
      map.update(lpmKey(24, [10, 1, 2, 0]), u32(24));
      assert.deepEqual(map.lookup(lpmKey(32, [10, 1, 2, 3])), u32(24));
      assert.deepEqual(map.lookup(lpmKey(32, [10, 9, 9, 9])), u32(8));
      assert.equal(map.lookup(lpmKey(32, [11, 0, 0, 1])), undefined);
      const entries = map.entries().map(([k, v]) => [k.toString('hex'), v.readUInt32LE(0)]);
      assert.deepEqual(
        entries.sort(),
        [
          [lpmKey(24, [10, 1, 2, 0]).toString('hex'), 24],
          [lpmKey(8, [10, 0, 0, 0]).toString('hex'), 8],
        ].sort(),
      );
      assert.equal(map.keys().length, 2);
      assert.equal(map.delete(lpmKey(8, [10, 0, 0, 0])), true);
      assert.equal(map.lookup(lpmKey(32, [10, 9, 9, 9])), undefined);
    } finally {
      map.close();
    }
  });

  test('created maps: batched entries across many chunks, per-CPU hash', () => {
    const big = BpfMap.create({ type: BPF_MAP_TYPE.HASH, name: 'lbpf_test_big', keySize: 4, valueSize: 4, maxEntries: 2048 });
    const pcpu = BpfMap.create({
      type: BPF_MAP_TYPE.PERCPU_HASH,
      keySize: 8,
      valueSize: 4,
      maxEntries: 16,
      flags: BPF_MAP_FLAG.NO_PREALLOC,
    });
    try {
      assert.equal(big.name, 'lbpf_test_big');
      assert.equal(big.maxEntries, 2048);
      for (let i = 0; i < 1500; i++) big.update(u32(i), u32(i ^ 0x5a5a));
      const entries = big.entries();
      assert.equal(entries.length, 1500);
      const seen = new Set<number>();
      for (const [k, v] of entries) {
        const key = k.readUInt32LE(0);
        assert.equal(v.readUInt32LE(0), key ^ 0x5a5a);
        seen.add(key);
      }
      assert.equal(seen.size, 1500);
      assert.equal(big.keys().length, 1500);

      assert.equal(pcpu.flags & BPF_MAP_FLAG.NO_PREALLOC, BPF_MAP_FLAG.NO_PREALLOC);
      assert.equal(pcpu.perCpu, true);
      assert.equal(pcpu.valueBufferSize, 8 * numPossibleCpus()); // 4-byte values padded to 8 per CPU
      const val = Buffer.alloc(pcpu.valueBufferSize, 0);
      val.writeUInt32LE(42, 0);
      pcpu.update(u64(1), val);
      const got = pcpu.entries();
      assert.equal(got.length, 1);
      assert.deepEqual(got[0]?.[1], val);
    } finally {
      big.close();
      pcpu.close();
    }
    expectBpfError(() => BpfMap.create({ type: BPF_MAP_TYPE.HASH, keySize: 0, valueSize: 4, maxEntries: 4 }), 'EINVAL', 'bpf_map_create');
  });

  test('reuseMap and setMaxEntries shape the maps an object creates', () => {
    const shared = BpfMap.create({ type: BPF_MAP_TYPE.HASH, name: 'fx_hash', keySize: 4, valueSize: 8, maxEntries: 64 });
    shared.update(u32(5), u64(55));
    const obj = BpfObject.open(fixture);
    try {
      obj.reuseMap('fx_hash', shared);
      obj.setMaxEntries('fx_lpm', 99);
      obj.load();
      const m = obj.map('fx_hash');
      assert.equal(m.id, shared.id);
      assert.deepEqual(m.lookup(u32(5)), u64(55));
      m.close();
      const lpm = obj.map('fx_lpm');
      assert.equal(lpm.maxEntries, 99);
      lpm.close();
    } finally {
      obj.close();
      shared.close();
    }
  });

  test('mountBpffs, pin, fromPin and unlink', () => {
    bpffs = join(work, 'bpffs');
    assert.equal(isBpffs(bpffs), false, 'missing path is not bpffs');
    assert.equal(isBpffs(work), false);
    mountBpffs(bpffs);
    assert.equal(isBpffs(bpffs), true);

    const obj = loadFixture(6);
    const prog = obj.program('fixture_return_global');
    const map = obj.map('fx_hash');
    obj.close();
    try {
      map.update(u32(9), u64(99));
      const progPin = join(bpffs, 'prog');
      const mapPin = join(bpffs, 'map');
      prog.pin(progPin);
      map.pin(mapPin);
      expectBpfError(() => map.pin(mapPin), 'EEXIST', 'bpf_obj_pin');

      const p2 = BpfProgram.fromPin(progPin);
      assert.equal(p2.id, prog.id);
      assert.equal(p2.tag, prog.tag);
      assert.equal(p2.testRun({ data: Buffer.alloc(64) }).retval, 6);
      p2.close();
      const m2 = BpfMap.fromPin(mapPin);
      assert.equal(m2.id, map.id);
      assert.deepEqual(m2.lookup(u32(9)), u64(99));
      m2.close();

      unlinkSync(progPin);
      unlinkSync(mapPin);
      assert.equal(existsSync(mapPin), false);
      expectBpfError(() => BpfMap.fromPin(mapPin), 'ENOENT', 'bpf_obj_get');
      expectBpfError(() => prog.pin(join(work, 'not-bpffs')), 'EPERM', 'bpf_obj_pin');
    } finally {
      prog.close();
      map.close();
    }
  });

  test('interface names and indexes', () => {
    assert.equal(ifNameToIndex('lo'), 1);
    assert.equal(ifIndexToName(1), 'lo');
    assert.equal(ifIndexToName(0x7ffffff0), undefined);
    const err = expectBpfError(() => ifNameToIndex('itm-nope0'), 'ENODEV');
    assert.equal(err.message, 'no such device: itm-nope0');
  });

  test('handles dropped without close() have their fds closed after GC', () => {
    // A separate process so that --expose-gc does not have to be given to the test runner.
    const script = `
      import { BpfMap, BPF_MAP_TYPE } from ${JSON.stringify(join(ROOT, 'dist/src/libbpf/index.js'))};
      import { existsSync } from 'node:fs';
      const opts = { type: BPF_MAP_TYPE.ARRAY, keySize: 4, valueSize: 4, maxEntries: 1 };
      // Closed explicitly, then its fd number is reused by 'kept' (the lowest free one, at once,
      // before any finalizer can free a lower one): the finalizer of 'closed' must not close it.
      // Another thread of the process may take the number first: then the scenario is tried again.
      let closed, closedFd, kept;
      for (let i = 0; i < 10; i++) {
        closed = BpfMap.create(opts);
        closedFd = closed.fd;
        closed.close();
        closed = null;
        kept = BpfMap.create(opts);
        if (kept.fd === closedFd) break;
        kept.close();
      }
      let dropped = BpfMap.create(opts);
      const droppedFd = dropped.fd;
      dropped = null;
      for (let i = 0; i < 20 && existsSync('/proc/self/fd/' + droppedFd); i++) {
        globalThis.gc();
        await new Promise((r) => setTimeout(r, 20));
      }
      const key = Buffer.alloc(4);
      kept.update(key, Buffer.from([1, 2, 3, 4]));
      console.log(JSON.stringify({
        droppedClosed: !existsSync('/proc/self/fd/' + droppedFd),
        reused: kept.fd === closedFd,
        keptWorks: kept.lookup(key).equals(Buffer.from([1, 2, 3, 4])),
      }));
    `;
    const file = join(work, 'gc-child.mjs');
    writeFileSync(file, script);
    const out = execFileSync(process.execPath, ['--expose-gc', file], { encoding: 'utf8' });
    const res = JSON.parse(out) as { droppedClosed: boolean; reused: boolean; keptWorks: boolean };
    assert.deepEqual(res, { droppedClosed: true, reused: true, keptWorks: true });
  });

  test('tc and XDP attach/query/detach on a veth pair in a private namespace', () => {
    const ns = `itmt-lbpf-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      execFileSync('ip', ['-n', ns, 'link', 'add', 'name', 'a', 'type', 'veth', 'peer', 'name', 'b']);
      const env: NodeJS.ProcessEnv = { ...process.env, [CHILD_ENV]: fixture };
      // Otherwise node:test in the child would think it reports to this runner.
      delete env.NODE_TEST_CONTEXT;
      const child = spawnSync('ip', ['netns', 'exec', ns, process.execPath, THIS_FILE], {
        env,
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(child.status, 0, `child failed:\n${child.stderr}\n${child.stdout}`);
      const line = child.stdout.split('\n').find((l) => l.startsWith('REPORT '));
      assert.ok(line !== undefined, `no report from child:\n${child.stdout}\n${child.stderr}`);
      const r = JSON.parse(line.slice('REPORT '.length)) as NetnsReport;

      assert.ok(r.ifA > 0);
      assert.equal(r.created1, true, 'first hookCreate creates clsact');
      assert.equal(r.created2, false, 'second hookCreate finds it');
      assert.equal(r.queryBefore, null);
      assert.equal(r.attachId, r.progId);
      assert.equal(r.queryAttached, r.progId);
      assert.equal(r.queryEgress, null);
      assert.equal(r.duplicateCode, 'EEXIST');
      assert.notEqual(r.prog2Id, r.progId);
      assert.equal(r.replaceId, r.prog2Id);
      assert.equal(r.queryReplaced, r.prog2Id);
      assert.match(r.filterShow, /direct-action/);
      assert.ok(r.runsSeen > 0, 'the attached program saw traffic arriving on a');
      assert.equal(r.queryDetached, null);
      assert.equal(r.detachMissingCode, 'ENOENT');
      assert.doesNotMatch(r.qdiscAfterDestroy, /clsact/);

      assert.equal(r.xdpNone, null);
      assert.deepEqual(r.xdpGeneric, { progId: r.xdpProgId, mode: 'generic' });
      assert.ok(r.xdpBusyCode === 'EBUSY' || r.xdpBusyCode === 'EEXIST', String(r.xdpBusyCode));
      assert.equal(r.xdpReplaced?.mode, 'generic');
      assert.notEqual(r.xdpReplaced?.progId, r.xdpProgId);
      assert.equal(r.xdpAfterDetach, null);
      assert.deepEqual(r.xdpNative, { progId: r.xdpProgId, mode: 'native' });
      assert.equal(r.xdpAfterNativeDetach, null);
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.doesNotMatch(left, new RegExp(ns));
  });

  test('devices, tc filter lists and ethtool features through the addon, in a private namespace', async (t) => {
    const ns = `itmt-lbpf-link-${process.pid}`;
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, [LINK_CHILD_ENV]: fixture };
      delete env.NODE_TEST_CONTEXT;
      const child = spawnSync('ip', ['netns', 'exec', ns, process.execPath, THIS_FILE], { env, encoding: 'utf8', timeout: 60_000 });
      assert.equal(child.status, 0, `child failed:\n${child.stderr}\n${child.stdout}`);
      const line = child.stdout.split('\n').find((l) => l.startsWith('REPORT '));
      assert.ok(line !== undefined, `no report from child:\n${child.stdout}\n${child.stderr}`);
      const report = JSON.parse(line.slice('REPORT '.length)) as Record<string, string>;
      assert.ok(Object.keys(report).length >= 10, JSON.stringify(report));
      for (const [name, outcome] of Object.entries(report)) {
        await t.test(name, () => assert.equal(outcome, 'ok', outcome));
      }
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.doesNotMatch(left, new RegExp(ns));
  });
}
