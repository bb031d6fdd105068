// The pcapng writer (src/user/pcapng.ts): blocks checked byte by byte against the format, read
// back, written in chunks, scanned after a cut, and read by tcpdump when it is installed.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BLOCK_EPB,
  BLOCK_IDB,
  BLOCK_ISB,
  BLOCK_SHB,
  EPB_INBOUND,
  EPB_OUTBOUND,
  PcapngWriter,
  readPcapng,
  scanPcapng,
} from '../src/user/pcapng.js';
import { buildPacket } from './harness/packet.js';

/** a writer whose output is collected, in the chunks the sink got */
function collect(flushAt?: number): {
  w: (s?: ConstructorParameters<typeof PcapngWriter>[1]) => PcapngWriter;
  chunks: Buffer[];
  bytes: () => Buffer;
} {
  const chunks: Buffer[] = [];
  return {
    chunks,
    w: (s) => new PcapngWriter((c) => chunks.push(Buffer.from(c)), s, flushAt),
    bytes: () => Buffer.concat(chunks),
  };
}

/** the blocks of a file as [type, total, body] by walking the length fields, checking both */
function blocksOf(b: Buffer): Array<{ type: number; total: number; at: number }> {
  const out = [];
  for (let at = 0; at < b.length; ) {
    const type = b.readUInt32LE(at),
      total = b.readUInt32LE(at + 4);
    assert.equal(total % 4, 0, `block at ${at}: length ${total} is a multiple of 4`);
    assert.equal(b.readUInt32LE(at + total - 4), total, `block at ${at}: trailing length`);
    out.push({ type, total, at });
    at += total;
  }
  return out;
}

const udp = (dport: number, payload: string) =>
  buildPacket({ family: 4, src: '10.1.0.1', dst: '10.2.0.2', proto: 'udp', sport: 4000, dport, payload });

describe('pcapng writer', () => {
  test('the smallest section: header, interface and one packet are the bytes the format gives', () => {
    const c = collect();
    const w = c.w();
    assert.equal(w.addInterface({ name: 'e', snaplen: 0 }), 0);
    w.packet(0, 0x0000000100000002n, Buffer.from([0xaa, 0xbb, 0xcc]));
    w.flush();
    const hex = c.bytes().toString('hex');
    const le = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n);
      return b.toString('hex');
    };
    const expected = [
      // SHB: type, length 28, byte-order magic, version 1.0, section length -1, length again
      '0a0d0d0a',
      le(28),
      '4d3c2b1a',
      '0100',
      '0000',
      'ffffffffffffffff',
      le(28),
      // IDB: type 1, length 20 + options, Ethernet, reserved, snaplen 0, if_name "e" (padded),
      // if_tsresol 9 (padded), opt_endofopt, length again
      le(1),
      le(40),
      '0100',
      '0000',
      le(0),
      '0200',
      '0100',
      '65000000',
      '0900',
      '0100',
      '09000000',
      '00000000',
      le(40),
      // EPB: type 6, length 28 + 4 (3 bytes padded) + 4, interface 0, ts high 1, low 2, caplen 3, origlen 3
      le(6),
      le(36),
      le(0),
      le(1),
      le(2),
      le(3),
      le(3),
      'aabbcc00',
      le(36),
    ].join('');
    assert.equal(hex, expected);
  });

  test('what is written reads back: interfaces, packets of every padding, snaplen, comments, flags, statistics', () => {
    const c = collect();
    const w = c.w({ application: 'itm test', os: 'Linux', hardware: 'x86_64', comments: ['first', 'second ü'] });
    const eg = w.addInterface({ name: 'eth-server', description: 'itm tc-egress (capture)', snaplen: 5 });
    const ig = w.addInterface({ name: 'eth-client', snaplen: 65535 });
    const sent: Array<{ iface: number; data: Buffer; comment?: string; flags?: number }> = [];
    for (let len = 0; len < 9; len++) {
      const data = Buffer.alloc(len, len + 1);
      const iface = len % 2 ? eg : ig;
      const p = {
        iface,
        data,
        ...(len % 3 ? { comment: `itm class=${len} hook=x`.slice(0, 10 + len) } : {}),
        ...(len % 4 ? { flags: iface === eg ? EPB_OUTBOUND : EPB_INBOUND } : {}),
      };
      sent.push(p);
      w.packet(iface, 1_700_000_000_123_456_789n + BigInt(len), data, {
        ...(p.comment ? { comment: len % 2 ? p.comment : Buffer.from(p.comment) } : {}),
        ...(p.flags ? { flags: p.flags } : {}),
      });
    }
    w.statistics(eg, { tsNs: 5n, startNs: 1n, endNs: 4n, received: 10n, delivered: 7n, comments: ['3 over the budget'] });
    w.flush();
    const buf = c.bytes();

    const blocks = blocksOf(buf);
    assert.deepEqual(
      blocks.map((b) => b.type),
      [BLOCK_SHB, BLOCK_IDB, BLOCK_IDB, ...sent.map(() => BLOCK_EPB), BLOCK_ISB],
    );
    // padding after the packet data is zero
    for (const [i, b] of blocks.filter((x) => x.type === BLOCK_EPB).entries()) {
      const cap = buf.readUInt32LE(b.at + 20);
      for (let k = cap; k % 4; k++) assert.equal(buf[b.at + 28 + k], 0, `packet ${i}: padding byte ${k}`);
    }

    const r = readPcapng(buf);
    assert.equal(r.sections.length, 1);
    assert.equal(r.sections[0]!.application, 'itm test');
    assert.deepEqual(r.sections[0]!.comments, ['first', 'second ü']);
    assert.deepEqual(
      r.interfaces.map((i) => [i.name, i.description, i.snaplen, i.linkType, i.tsresol]),
      [
        ['eth-server', 'itm tc-egress (capture)', 5, 1, 9],
        ['eth-client', undefined, 65535, 1, 9],
      ],
    );
    assert.equal(r.packets.length, sent.length);
    r.packets.forEach((p, i) => {
      const s = sent[i]!;
      const cap = s.iface === eg ? Math.min(5, s.data.length) : s.data.length;
      assert.equal(p.iface, s.iface, `packet ${i}: interface`);
      assert.equal(p.ts, 1_700_000_000_123_456_789n + BigInt(i), `packet ${i}: timestamp`);
      assert.equal(p.origLen, s.data.length, `packet ${i}: original length`);
      assert.equal(p.capLen, cap, `packet ${i}: captured length`);
      assert.deepEqual(p.data, s.data.subarray(0, cap), `packet ${i}: bytes`);
      assert.deepEqual(p.comments, s.comment ? [s.comment] : [], `packet ${i}: comment`);
      assert.equal(p.flags, s.flags, `packet ${i}: flags`);
    });
    assert.equal(r.statistics.length, 1);
    const st = r.statistics[0]!;
    assert.equal(st.iface, eg);
    assert.equal(st.received, 10n);
    assert.equal(st.delivered, 7n);
    assert.deepEqual(st.comments, ['3 over the budget']);
  });

  test('the buffer goes to the sink at the threshold and on flush; a failing sink loses nothing', () => {
    const c = collect(1024);
    const w = c.w();
    w.addInterface({ name: 'e', snaplen: 0 });
    assert.equal(c.chunks.length, 0, 'nothing written before the threshold');
    const frame = Buffer.alloc(200, 7);
    for (let i = 0; i < 20; i++) w.packet(0, BigInt(i), frame);
    assert.ok(c.chunks.length >= 3, `written in chunks as it went (${c.chunks.length})`);
    assert.ok(
      c.chunks.every((k) => k.length >= 1024 && k.length < 2048 + 300),
      `chunk sizes ${c.chunks.map((k) => k.length)}`,
    );
    assert.ok(w.buffered < 1024);
    // a packet larger than the buffer goes through too
    w.packet(0, 99n, Buffer.alloc(5000, 1));
    w.flush();
    assert.equal(w.buffered, 0);
    assert.equal(w.flushed, c.bytes().length);
    const r = readPcapng(c.bytes());
    assert.equal(r.packets.length, 21);
    assert.equal(r.packets[20]!.capLen, 5000);

    let fail = true;
    const out: Buffer[] = [];
    const w2 = new PcapngWriter((k) => {
      if (fail) throw new Error('ENOSPC');
      out.push(Buffer.from(k));
    });
    w2.addInterface({ name: 'e', snaplen: 0 });
    assert.throws(() => w2.flush(), /ENOSPC/);
    fail = false;
    w2.packet(0, 1n, frame);
    w2.flush();
    const r2 = readPcapng(Buffer.concat(out));
    assert.equal(r2.interfaces.length, 1);
    assert.equal(r2.packets.length, 1);
  });

  test('the reader refuses what is broken, saying where', () => {
    const c = collect();
    const w = c.w();
    w.addInterface({ name: 'e', snaplen: 0 });
    w.packet(0, 1n, Buffer.alloc(10));
    w.flush();
    const good = c.bytes();
    assert.throws(() => readPcapng(good.subarray(0, good.length - 2)), /runs past the end of the file|too few/);
    const badTail = Buffer.from(good);
    badTail.writeUInt32LE(999, badTail.length - 4);
    assert.throws(() => readPcapng(badTail), /trailing length 999/);
    const noIface = Buffer.from(good);
    noIface.writeUInt32LE(3, blocksOf(good).find((b) => b.type === BLOCK_EPB)!.at + 8); // the packet names interface 3
    assert.throws(() => readPcapng(noIface), /interface 3/);
    assert.throws(() => readPcapng(Buffer.from('not a pcapng file at all')), /does not start with a section header/);
  });

  test('scan: a file cut in the middle of a block ends at the last whole one, with its packets counted', () => {
    const dir = mkdtempSync(join(tmpdir(), 'itm-pcapng-'));
    try {
      const c = collect();
      const w = c.w({ comments: ['itm-load x'] });
      w.addInterface({ name: 'e', snaplen: 100 });
      for (let i = 0; i < 50; i++) w.packet(0, BigInt(i), Buffer.alloc(60 + i, i));
      w.flush();
      const whole = c.bytes();
      const file = join(dir, 'f.pcapng');
      for (const cut of [0, 3, 17, 200]) {
        writeFileSync(file, whole);
        appendFileSync(file, whole.subarray(whole.length - 200, whole.length - 200 + cut)); // the start of a block, cut
        const fd = openSync(file, 'r');
        try {
          const s = scanPcapng(fd);
          assert.equal(s.end, whole.length, `cut after ${cut} bytes`);
          assert.equal(s.packets, 50);
          assert.equal(
            s.bytes,
            Array.from({ length: 50 }, (_, i) => Math.min(100, 60 + i)).reduce((a, b) => a + b),
          );
          assert.deepEqual(s.firstComments, ['itm-load x']);
        } finally {
          closeSync(fd);
        }
      }
      writeFileSync(file, 'something else entirely, longer than a block header');
      const fd = openSync(file, 'r');
      try {
        const s = scanPcapng(fd);
        assert.equal(s.end, 0);
        assert.equal(s.firstComments, undefined);
      } finally {
        closeSync(fd);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const tcpdump = spawnSync('tcpdump', ['--version']).status === 0;
  test('tcpdump reads it: every packet, two sections, nanosecond timestamps', {
    skip: tcpdump ? undefined : 'tcpdump is not installed (npm run setup installs it)',
  }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'itm-pcapng-'));
    try {
      const c = collect(4096);
      const section = () => {
        const w = c.w({ application: 'itm test' });
        w.addInterface({ name: 'eth0', snaplen: 65535 });
        return w;
      };
      const w1 = section();
      for (let i = 0; i < 30; i++)
        w1.packet(0, 1_700_000_000_000_000_001n + BigInt(i) * 1000n, udp(i % 3 ? 5001 : 5002, `p${i}`), {
          comment: 'itm class=1 hook=tc-egress',
          flags: EPB_OUTBOUND,
        });
      w1.flush();
      // a second section, as a restarted capture appends
      const w2 = section();
      for (let i = 0; i < 12; i++) w2.packet(0, 1_700_000_001_000_000_000n + BigInt(i), udp(5001, `q${i}`), { flags: EPB_OUTBOUND });
      w2.statistics(0, { tsNs: 1_700_000_002_000_000_000n, received: 12n, delivered: 12n });
      w2.flush();
      const file = join(dir, 'f.pcapng');
      writeFileSync(file, c.bytes());
      const read = (filter: string[]) => {
        const r = spawnSync('tcpdump', ['-r', file, '-nn', '-tt', '--time-stamp-precision=nano', ...filter], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        return r.stdout.trim().split('\n').filter(Boolean);
      };
      const all = read([]);
      assert.equal(all.length, 42);
      assert.equal(read(['udp dst port 5001']).length, 20 + 12);
      assert.equal(read(['udp dst port 5002']).length, 10);
      assert.match(all[0]!, /^1700000000\.000000001 IP 10\.1\.0\.1\.4000 > 10\.2\.0\.2\.5002: UDP, length 2$/);
      assert.match(all[30]!, /^1700000001\.000000000 IP 10\.1\.0\.1\.4000 > 10\.2\.0\.2\.5001: UDP/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
