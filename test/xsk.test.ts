// Tests for AF_XDP sockets (src/libbpf/xsk.ts) with real packets. Needs root. Everything runs in
// a network namespace of its own: this file re-runs itself (child mode) under `ip netns exec`,
// the child does all the work and prints one REPORT line, and the tests here check that report.
//
// Topology in the namespace: veth xa (10.77.0.1) <-> xb (10.77.0.2). xb runs an XDP program in
// native mode that redirects every packet into an XSKMAP, so whatever xa sends arrives on the
// AF_XDP socket bound to xb queue 0; what that socket transmits leaves xb and arrives on xa.
// Both addresses live in one namespace, so 10.77.0.2's local route is removed and its address
// added without a prefix route (otherwise the kernel would deliver xa's datagrams over lo instead
// of sending them through the veth), and xa accepts packets from a local source address.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { BpfError, BpfObject, NotSupportedError, ifNameToIndex, xdp, XskSocket } from '../src/libbpf/index.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const THIS_FILE = fileURLToPath(import.meta.url);
const CHILD_ENV = 'XSK_TEST_NETNS_CHILD';

const PORT = 9999;
const MAGIC_REQ = 0x58534b54; // 'XSKT'
const MAGIC_REP = 0x58534b52; // 'XSKR'
const PAYLOAD_LEN = 64;
const ETH = 14;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

function payload(seq: number): Buffer {
  const b = Buffer.alloc(PAYLOAD_LEN);
  b.writeUInt32BE(MAGIC_REQ, 0);
  b.writeUInt32BE(seq, 4);
  for (let j = 8; j < PAYLOAD_LEN; j++) b[j] = (seq * 7 + j) & 0xff;
  return b;
}

/** Sequence number of an intact test payload with the given magic, else undefined. */
function checkPayload(p: Buffer, magic: number): number | undefined {
  if (p.length !== PAYLOAD_LEN || p.readUInt32BE(0) !== magic) return undefined;
  const seq = p.readUInt32BE(4);
  for (let j = 8; j < PAYLOAD_LEN; j++) if (p[j] !== ((seq * 7 + j) & 0xff)) return undefined;
  return seq;
}

/** Offset of the UDP payload of an IPv4 UDP frame to our port, else -1. */
function udpPayloadOffset(f: Buffer): number {
  if (f.length < ETH + 20 + 8 || f.readUInt16BE(12) !== 0x0800) return -1;
  const ihl = (f[ETH]! & 0x0f) * 4;
  if (f[ETH + 9] !== 17 || f.length < ETH + ihl + 8) return -1;
  if (f.readUInt16BE(ETH + ihl + 2) !== PORT) return -1;
  return ETH + ihl + 8;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function sum16(b: Buffer, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i + 1 < len; i += 2) s += b.readUInt16BE(off + i);
  if (len & 1) s += b[off + len - 1]! << 8;
  return s;
}

/**
 * Turns a request frame into its reply in place: swaps MACs, IPs and ports, marks the payload as
 * a reply and recomputes both checksums (a locally sent datagram may carry only the pseudo-header
 * sum, and AF_XDP transmits bytes as they are).
 */
function reflect(f: Buffer): void {
  const ihl = (f[ETH]! & 0x0f) * 4;
  const udp = ETH + ihl;
  const tmp = Buffer.alloc(6);
  f.copy(tmp, 0, 0, 6);
  f.copy(f, 0, 6, 12);
  tmp.copy(f, 6);
  const src = f.readUInt32BE(ETH + 12);
  f.writeUInt32BE(f.readUInt32BE(ETH + 16), ETH + 12);
  f.writeUInt32BE(src, ETH + 16);
  const sport = f.readUInt16BE(udp);
  f.writeUInt16BE(f.readUInt16BE(udp + 2), udp);
  f.writeUInt16BE(sport, udp + 2);
  f.writeUInt32BE(MAGIC_REP, udp + 8);
  f.writeUInt16BE(0, ETH + 10);
  f.writeUInt16BE(~fold(sum16(f, ETH, ihl)) & 0xffff, ETH + 10);
  const udpLen = f.readUInt16BE(udp + 4);
  f.writeUInt16BE(0, udp + 6);
  const s = sum16(f, ETH + 12, 8) + 17 + udpLen + sum16(f, udp, udpLen);
  const c = ~fold(s) & 0xffff;
  f.writeUInt16BE(c === 0 ? 0xffff : c, udp + 6);
}

// ---------------------------------------------------------------------------------------------
// Child mode: runs inside the namespace.

interface CaseResult {
  ok: boolean;
  error?: string;
  info?: Record<string, unknown>;
}

interface Report {
  cases: Record<string, CaseResult>;
}

interface Udp {
  sock: dgram.Socket;
  port: number;
  replies: Map<number, number>; // seq -> times received
  bad: number;
}

async function openUdp(): Promise<Udp> {
  const sock = dgram.createSocket('udp4');
  const u: Udp = { sock, port: 0, replies: new Map(), bad: 0 };
  sock.on('message', (msg) => {
    const seq = checkPayload(msg, MAGIC_REP);
    if (seq === undefined) u.bad++;
    else u.replies.set(seq, (u.replies.get(seq) ?? 0) + 1);
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: '10.77.0.1', port: 0 }, () => resolve());
  });
  u.port = sock.address().port;
  return u;
}

function send(u: Udp, seqs: number[]): Promise<void> {
  let left = seqs.length;
  if (left === 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    for (const seq of seqs) {
      u.sock.send(payload(seq), PORT, '10.77.0.2', (err) => {
        if (err) reject(err);
        else if (--left === 0) resolve();
      });
    }
  });
}

function closeUdp(u: Udp): Promise<void> {
  return new Promise((resolve) => u.sock.close(() => resolve()));
}

async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await sleep(2);
  }
  return true;
}

function expectError(fn: () => unknown, cls: typeof BpfError, codes: string[]): BpfError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof cls, `expected ${cls.name} ${codes.join('|')}, got ${String(caught)}`);
  assert.ok(codes.includes(caught.code), `${caught.code}: ${caught.message}`);
  assert.ok(caught.errno > 0);
  return caught;
}

function assertSettled(sock: XskSocket): void {
  const c = sock.frameCounts();
  assert.equal(c.consistent, true, JSON.stringify(c));
  assert.equal(c.held, 0, JSON.stringify(c));
  assert.equal(c.fill + c.held + c.tx + c.free, c.frames, JSON.stringify(c));
}

async function drainTx(sock: XskSocket): Promise<void> {
  await waitFor(() => {
    sock.reclaim();
    return sock.frameCounts().tx === 0;
  }, 2000);
}

async function runChild(objPath: string): Promise<Report> {
  const sh = (...args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const dev of ['all', 'default', 'xa', 'xb']) writeFileSync(`/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`, '1');
  sh('ip', 'link', 'set', 'dev', 'xa', 'up');
  sh('ip', 'link', 'set', 'dev', 'xb', 'up');
  sh('ip', 'addr', 'add', '10.77.0.1/24', 'dev', 'xa');
  sh('ip', 'addr', 'add', '10.77.0.2/24', 'dev', 'xb', 'noprefixroute');
  sh('ip', 'route', 'del', 'local', '10.77.0.2', 'dev', 'xb', 'table', 'local');
  // Replies come from 10.77.0.2, an address of this namespace: without accept_local xa would
  // drop them as martians.
  writeFileSync('/proc/sys/net/ipv4/conf/xa/accept_local', '1');
  const macA = readFileSync('/sys/class/net/xa/address', 'utf8').trim();
  const macB = readFileSync('/sys/class/net/xb/address', 'utf8').trim();
  sh('ip', 'neigh', 'replace', '10.77.0.2', 'lladdr', macB, 'dev', 'xa', 'nud', 'permanent');
  sh('ip', 'neigh', 'replace', '10.77.0.1', 'lladdr', macA, 'dev', 'xb', 'nud', 'permanent');
  const ifA = ifNameToIndex('xa');
  const ifB = ifNameToIndex('xb');

  const obj = BpfObject.open(objPath);
  obj.load();
  const prog = obj.program('xsk_redirect');
  const xsks = obj.map('xsks');
  xdp.attach(ifB, prog.fd, { mode: 'native' });

  const cases: Record<string, CaseResult> = {};
  const run = async (name: string, fn: (info: Record<string, unknown>) => Promise<void>) => {
    const info: Record<string, unknown> = {};
    const t0 = Date.now();
    process.stderr.write(`case ${name}: start\n`);
    try {
      await fn(info);
      process.stderr.write(`case ${name}: ok after ${Date.now() - t0} ms\n`);
      cases[name] = { ok: true, info };
    } catch (err) {
      const e = err as Error;
      process.stderr.write(`case ${name}: failed after ${Date.now() - t0} ms: ${e.message}\n`);
      cases[name] = { ok: false, error: `${e.name}: ${e.message}\n${e.stack ?? ''}`, info };
    }
  };
  // The kernel releases a closed socket's hold on its queue asynchronously (a deferred work
  // item), so binding the same queue right after close() can briefly fail with EBUSY.
  let rebindRetries = 0;
  const createRetry = async (opts: Parameters<typeof XskSocket.create>[0]): Promise<XskSocket> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return XskSocket.create(opts);
      } catch (err) {
        if (!(err instanceof BpfError) || err.code !== 'EBUSY' || attempt >= 200) throw err;
        rebindRetries++;
        await sleep(5);
      }
    }
  };
  const bindXsk = async (opts: Partial<Parameters<typeof XskSocket.create>[0]> = {}) => {
    const sock = await createRetry({ ifindex: ifB, queue: 0, ...opts });
    xsks.update(u32(0), u32(sock.fd));
    return sock;
  };

  await run('receive', async (info) => {
    const sock = await bindXsk();
    const u = await openUdp();
    try {
      const N = 1000;
      const seen = new Map<number, number>();
      let other = 0;
      let batches = 0;
      const sending = send(
        u,
        Array.from({ length: N }, (_, i) => i),
      );
      const deadline = Date.now() + 5000;
      while (seen.size < N && Date.now() < deadline) {
        if (!(await sock.wait(50))) continue;
        const b = sock.receive(256);
        batches++;
        for (let i = 0; i < b.count; i++) {
          const f = sock.umem.subarray(b.addrs[i]!, b.addrs[i]! + b.lens[i]!);
          const off = udpPayloadOffset(f);
          const seq = off < 0 ? undefined : checkPayload(f.subarray(off), MAGIC_REQ);
          if (seq === undefined) other++;
          else seen.set(seq, (seen.get(seq) ?? 0) + 1);
        }
        sock.release(b.addrs);
      }
      await sending;
      const stats = sock.stats();
      Object.assign(info, { received: seen.size, other, batches, stats, counts: sock.frameCounts() });
      assert.equal(seen.size, N, `received ${seen.size} of ${N} datagrams`);
      for (let i = 0; i < N; i++) assert.equal(seen.get(i), 1, `datagram ${i} seen ${seen.get(i) ?? 0} times`);
      assert.equal(stats.rxInvalid, 0);
      assert.equal(stats.txInvalid, 0);
      assertSettled(sock);
      const c = sock.frameCounts();
      assert.equal(c.fill, c.frames / 2, 'released frames went back to the fill ring');
    } finally {
      await closeUdp(u);
      sock.close();
    }
  });

  await run('round trip', async (info) => {
    const sock = await bindXsk({ frames: 1024 });
    const u = await openUdp();
    try {
      const N = 200;
      let reflected = 0;
      let other = 0;
      const sending = send(
        u,
        Array.from({ length: N }, (_, i) => i),
      );
      const deadline = Date.now() + 5000;
      while (u.replies.size < N && Date.now() < deadline) {
        sock.reclaim();
        if (!(await sock.wait(20))) continue;
        const b = sock.receive(64);
        const txA: number[] = [];
        const txL: number[] = [];
        const rel: number[] = [];
        for (let i = 0; i < b.count; i++) {
          const a = b.addrs[i]!;
          const f = sock.umem.subarray(a, a + b.lens[i]!);
          const off = udpPayloadOffset(f);
          if (off < 0 || checkPayload(f.subarray(off), MAGIC_REQ) === undefined) {
            other++;
            rel.push(a);
            continue;
          }
          reflect(f);
          txA.push(a);
          txL.push(b.lens[i]!);
        }
        sock.release(rel);
        const q = sock.transmit(txA, txL);
        assert.equal(q, txA.length, 'tx ring had room');
        reflected += q;
      }
      await sending;
      await waitFor(() => u.replies.size >= N, 1000);
      await drainTx(sock);
      const stats = sock.stats();
      Object.assign(info, { reflected, replies: u.replies.size, badReplies: u.bad, other, stats, counts: sock.frameCounts() });
      assert.equal(u.replies.size, N, `${u.replies.size} of ${N} replies arrived on xa`);
      assert.equal(u.bad, 0, 'replies with a damaged payload');
      for (const [seq, n] of u.replies) assert.equal(n, 1, `reply ${seq} arrived ${n} times`);
      assert.equal(stats.txInvalid, 0);
      assertSettled(sock);
      assert.equal(sock.frameCounts().tx, 0, 'every transmitted frame came back through the completion ring');
    } finally {
      await closeUdp(u);
      sock.close();
    }
  });

  await run('load', async (info) => {
    // A small UMEM so frames recycle many times; odd datagrams are answered from a fresh frame
    // (allocTx) and the request frame released, even ones are reflected in place.
    const FRAMES = 512;
    const sock = await bindXsk({ frames: FRAMES, rxSize: 512, txSize: 512 });
    const u = await openUdp();
    try {
      const N = 20000;
      const BURST = 100;
      let xskRx = 0;
      let inPlace = 0;
      let fresh = 0;
      let noFrame = 0;
      let other = 0;
      let nativeNs = 0n;
      let txNs = 0n; // transmit(): in copy mode the kernel sends (and veth delivers) inside sendto()
      let checks = 0;
      const addrs = new Uint32Array(128);
      const lens = new Uint32Array(128);
      const t0 = process.hrtime.bigint();
      for (let base = 0; base < N; base += BURST) {
        const want = Math.min(BURST, N - base);
        const sending = send(
          u,
          Array.from({ length: want }, (_, i) => base + i),
        );
        let got = 0;
        const deadline = Date.now() + 3000;
        while (got < want && Date.now() < deadline) {
          if (!(await sock.wait(20))) continue;
          const t = process.hrtime.bigint();
          const n = sock.receiveInto(addrs, lens);
          const txA: number[] = [];
          const txL: number[] = [];
          const rel: number[] = [];
          for (let i = 0; i < n; i++) {
            const a = addrs[i]!;
            const f = sock.umem.subarray(a, a + lens[i]!);
            const off = udpPayloadOffset(f);
            const seq = off < 0 ? undefined : f.readUInt32BE(off + 4);
            if (seq === undefined) {
              other++;
              rel.push(a);
              continue;
            }
            got++;
            if ((seq & 1) === 0) {
              reflect(f);
              txA.push(a);
              txL.push(lens[i]!);
              inPlace++;
              continue;
            }
            const r = sock.allocTx();
            if (r === undefined) {
              noFrame++;
              rel.push(a);
              continue;
            }
            const out = sock.umem.subarray(r, r + lens[i]!);
            f.copy(out);
            reflect(out);
            txA.push(r);
            txL.push(lens[i]!);
            rel.push(a);
            fresh++;
          }
          sock.release(rel);
          const t1 = process.hrtime.bigint();
          const q = sock.transmit(txA, txL);
          txNs += process.hrtime.bigint() - t1;
          if (q < txA.length) sock.release(txA.slice(q)); // tx ring full: drop the rest
          sock.reclaim();
          nativeNs += process.hrtime.bigint() - t;
          xskRx += n;
          if ((++checks & 31) === 0) assert.equal(sock.frameCounts().consistent, true);
        }
        await sending;
        assert.equal(got, want, `burst at ${base}: ${got} of ${want} datagrams reached the socket`);
        // Keep xa's socket buffer from overflowing: collect this burst's replies first.
        const replied = await waitFor(() => u.replies.size >= base + want - noFrame, 1000);
        assert.ok(replied, `burst at ${base}: ${u.replies.size} replies so far`);
      }
      const elapsedNs = process.hrtime.bigint() - t0;
      await waitFor(() => u.replies.size >= N - noFrame, 1000);
      await drainTx(sock);
      const stats = sock.stats();
      const c = sock.frameCounts();
      const pps = Math.round((N * 1e9) / Number(elapsedNs));
      const loopNsPerPkt = Math.round(Number(nativeNs) / Math.max(1, xskRx));
      const txNsPerPkt = Math.round(Number(txNs) / Math.max(1, xskRx));
      Object.assign(info, {
        xskRx,
        inPlace,
        fresh,
        noFrame,
        other,
        replies: u.replies.size,
        badReplies: u.bad,
        endToEndPps: pps,
        xskLoopNsPerPacket: loopNsPerPkt,
        ofWhichTransmitNs: txNsPerPkt,
        stats,
        counts: c,
      });
      assert.equal(xskRx - other, N, 'every datagram reached the socket');
      assert.equal(stats.rxDropped + stats.rxRingFull, 0, JSON.stringify(stats));
      assert.equal(stats.rxInvalid + stats.txInvalid, 0, JSON.stringify(stats));
      assert.equal(noFrame, 0, 'allocTx found a frame every time');
      assert.equal(u.replies.size, N, `${u.replies.size} of ${N} replies arrived`);
      assert.equal(u.bad, 0);
      // Conservation: nothing held, nothing stuck in tx, the kernel has exactly the fill half.
      assertSettled(sock);
      assert.equal(c.tx, 0);
      assert.equal(c.fill, FRAMES / 2);
      assert.equal(c.free, FRAMES / 2);
      // Every free frame can really be taken, and given back.
      const taken: number[] = [];
      for (let a = sock.allocTx(); a !== undefined; a = sock.allocTx()) taken.push(a);
      assert.equal(taken.length, FRAMES / 2);
      assert.equal(new Set(taken).size, taken.length);
      sock.release(taken);
      assertSettled(sock);
    } finally {
      await closeUdp(u);
      sock.close();
    }
  });

  await run('errors', async (info) => {
    const noDev = expectError(() => XskSocket.create({ ifindex: 999999 }), BpfError, ['ENXIO', 'ENODEV']);
    assert.match(noDev.message, /999999/);

    const zc = expectError(() => XskSocket.create({ ifindex: ifA, mode: 'zerocopy' }), NotSupportedError, ['EOPNOTSUPP', 'ENOTSUPP']);
    assert.match(zc.message, /copy/);
    assert.match(zc.message, /xa/);
    info.zerocopyMessage = zc.message;

    const s = XskSocket.create({ ifindex: ifA, frames: 64 });
    // Frames that are not the caller's are refused without changing anything.
    const a = s.allocTx();
    assert.ok(a !== undefined);
    const before = s.frameCounts();
    const twice = expectError(() => s.release([a, a]), BpfError, ['EINVAL']);
    assert.match(twice.message, /not held by the caller/);
    expectError(() => s.release([0]), BpfError, ['EINVAL']); // frame 0 is in the fill ring
    expectError(() => s.release([64 * 2048]), BpfError, ['EINVAL']);
    expectError(() => s.transmit([a], [0]), BpfError, ['EINVAL']);
    expectError(() => s.transmit([a + 100], [2000]), BpfError, ['EINVAL']);
    assert.deepEqual(s.frameCounts(), before);
    s.release([a]);
    assertSettled(s);

    // close() while a wait is pending wakes it; afterwards every use is EBADF.
    const t = Date.now();
    const pending = s.wait(10_000);
    s.close();
    s.close();
    assert.equal(await pending, false);
    assert.ok(Date.now() - t < 2000, 'close() woke the pending wait');
    assert.equal(s.fd, -1);
    assert.equal(s.closed, true);
    assert.equal(s.umem.length, 0, 'the UMEM buffer is detached');
    const ebadf = expectError(() => s.receive(1), BpfError, ['EBADF']);
    assert.equal(ebadf.errno, 9);
    expectError(() => s.transmit([0], [60]), BpfError, ['EBADF']);
    expectError(() => s.allocTx(), BpfError, ['EBADF']);
    expectError(() => s.stats(), BpfError, ['EBADF']);
    await assert.rejects(s.wait(10), (e: unknown) => e instanceof BpfError && e.code === 'EBADF');

    // A socket dropped without close() is freed by the garbage collector (the queue becomes
    // bindable again), while a UMEM Buffer still referenced stays valid.
    const gc = (globalThis as { gc?: () => void }).gc;
    assert.ok(gc !== undefined, 'the child runs with --expose-gc');
    let umem: Buffer | undefined = await (async (): Promise<Buffer> => {
      const dropped = await createRetry({ ifindex: ifA, frames: 64 });
      dropped.umem.fill(0xab, 0, 4096);
      return dropped.umem;
    })();
    let again: XskSocket | undefined;
    for (let i = 0; i < 200 && again === undefined; i++) {
      gc();
      await sleep(5);
      try {
        again = XskSocket.create({ ifindex: ifA, frames: 64 });
      } catch (err) {
        if (!(err instanceof BpfError) || err.code !== 'EBUSY') throw err;
      }
    }
    assert.ok(again !== undefined, 'the dropped socket was freed');
    assert.equal(umem.length, 64 * 2048);
    assert.equal(umem[4095], 0xab);
    again.close();
    umem = undefined;
    gc();
  });

  cases.errors!.info = { ...cases.errors!.info, rebindRetries };
  xdp.detach(ifB);
  prog.close();
  xsks.close();
  obj.close();
  return { cases };
}

const childObject = process.env[CHILD_ENV];
if (childObject !== undefined) {
  const report = await runChild(childObject);
  process.stdout.write(`REPORT ${JSON.stringify(report)}\n`);
} else {
  registerTests();
}

// ---------------------------------------------------------------------------------------------

function registerTests(): void {
  const ns = `itmt-xsk-${process.pid}`;
  let work = '';
  let report: Report | undefined;
  let setupError: Error | undefined;

  before(() => {
    work = mkdtempSync(join(tmpdir(), 'itm-xsk-test-'));
    const vmlinux = execFileSync('bpftool', ['btf', 'dump', 'file', '/sys/kernel/btf/vmlinux', 'format', 'c'], {
      maxBuffer: 256 * 1024 * 1024,
    });
    writeFileSync(join(work, 'vmlinux.h'), vmlinux);
    const obj = join(work, 'xsk_redirect.bpf.o');
    execFileSync('clang', [
      '-O2',
      '-g',
      '-target',
      'bpf',
      '-I',
      work,
      '-c',
      join(ROOT, 'test', 'fixtures', 'xsk_redirect.bpf.c'),
      '-o',
      obj,
    ]);

    execFileSync('ip', ['netns', 'add', ns]);
    try {
      execFileSync('ip', ['-n', ns, 'link', 'add', 'name', 'xa', 'type', 'veth', 'peer', 'name', 'xb']);
      const env: NodeJS.ProcessEnv = { ...process.env, [CHILD_ENV]: obj };
      // Otherwise node:test in the child would think it reports to this runner.
      delete env.NODE_TEST_CONTEXT;
      const child = spawnSync('ip', ['netns', 'exec', ns, process.execPath, '--expose-gc', THIS_FILE], {
        env,
        encoding: 'utf8',
        timeout: 35_000,
      });
      const line = child.stdout.split('\n').find((l) => l.startsWith('REPORT '));
      if (child.status !== 0 || line === undefined) {
        setupError = new Error(`child failed (status ${child.status}, ${child.signal ?? 'no signal'}):\n${child.stderr}\n${child.stdout}`);
      } else {
        report = JSON.parse(line.slice('REPORT '.length)) as Report;
      }
    } finally {
      execFileSync('ip', ['netns', 'del', ns]);
    }
  });

  after(() => {
    if (work !== '') rmSync(work, { recursive: true, force: true });
  });

  function check(name: string): CaseResult {
    if (setupError !== undefined) throw setupError;
    const r = report?.cases[name];
    assert.ok(r !== undefined, `the child did not run case "${name}"`);
    assert.ok(r.ok, `${r.error ?? ''}\ninfo: ${JSON.stringify(r.info)}`);
    return r;
  }

  test('1000 UDP datagrams from xa arrive intact through receive() batches', (t) => {
    const r = check('receive');
    t.diagnostic(JSON.stringify(r.info));
  });

  test('round trip: requests reflected in place in the UMEM arrive back on xa', (t) => {
    const r = check('round trip');
    t.diagnostic(JSON.stringify(r.info));
  });

  test('20000 packets in bursts: every frame accounted for afterwards', (t) => {
    const r = check('load');
    t.diagnostic(JSON.stringify(r.info));
  });

  test('errors: unknown device, zero-copy on veth, misuse of frames, use after close', (t) => {
    const r = check('errors');
    t.diagnostic(JSON.stringify(r.info));
  });

  test('the namespace is gone', () => {
    const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.doesNotMatch(left, new RegExp(`\\b${ns}\\b`));
  });
}
