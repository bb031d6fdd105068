// The packet view user-space modules get: fields read in place, rewrites with checksums put right.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PacketView } from '../src/user/packet.js';
import { buildArp, buildPacket, parsePacket, type PacketSpec } from './harness/index.js';

const view = (frame: Buffer): PacketView => {
  const v = PacketView.parse(frame);
  if (typeof v === 'string') throw new Error(v);
  return v;
};

describe('PacketView', () => {
  const specs: Array<[string, PacketSpec]> = [
    ['UDP/IPv4', { family: 4, src: '10.1.0.1', dst: '10.2.0.2', proto: 'udp', sport: 1234, dport: 5001, ecn: 1, payload: 'hello' }],
    [
      'TCP/IPv4 with options in a VLAN',
      {
        family: 4,
        src: '192.0.2.1',
        dst: '198.51.100.7',
        proto: 'tcp',
        sport: 40000,
        dport: 443,
        tcp: { flags: 'SA' },
        ipOptions: Buffer.alloc(8, 1),
        vlan: 9,
        payload: 'x'.repeat(33),
      },
    ],
    [
      'TCP/IPv6 with extension headers',
      {
        family: 6,
        src: 'fd01::1',
        dst: 'fd02::2',
        proto: 'tcp',
        sport: 1,
        dport: 2,
        ecn: 3,
        flowLabel: 0x12345,
        ipv6ExtHeaders: [{ type: 'hop' }, { type: 'dst' }],
        tcp: { flags: 'PA' },
        payload: 'abc',
      },
    ],
    [
      'UDP/IPv6',
      { family: 6, src: '2001:db8::1', dst: '2001:db8::2', proto: 'udp', sport: 53, dport: 5353, payload: Buffer.alloc(101, 7) },
    ],
  ];
  for (const [what, spec] of specs) {
    test(`reads ${what} in place`, () => {
      const frame = buildPacket(spec);
      const v = view(frame);
      const p = parsePacket(frame);
      assert.deepEqual(
        [v.family, v.proto, v.src, v.dst, v.sport, v.dport, v.dscp, v.ecn, v.tcpFlags],
        [p.family, p.proto, p.src, p.dst, p.sport, p.dport, p.dscp, p.ecn, p.tcpFlags ?? 0],
      );
      assert.equal(v.validate(), undefined);
    });
    test(`sets the DSCP of ${what}, keeping ECN and valid checksums`, () => {
      const frame = buildPacket(spec);
      const before = parsePacket(frame);
      view(frame).setDscp(46);
      const after = parsePacket(frame);
      assert.equal(after.dscp, 46);
      assert.equal(after.ecn, before.ecn);
      if (after.family === 4) assert.equal(after.ipChecksumOk, true);
      assert.equal(after.l4ChecksumOk, true);
      if (after.family === 6) assert.equal(after.flowLabel, before.flowLabel, 'the flow label stays');
    });
    test(`recomputes the checksums of ${what} from scratch`, () => {
      // as a locally sent packet leaves them: left for offload (here simply wrong)
      const frame = buildPacket({ ...spec, l4Checksum: 0x1234, ...(spec.family === 4 ? { ipChecksum: 0x4321 } : {}) });
      assert.equal(parsePacket(frame).l4ChecksumOk, false);
      view(frame).fixChecksums();
      const p = parsePacket(frame);
      assert.equal(p.l4ChecksumOk, true);
      if (p.family === 4) assert.equal(p.ipChecksumOk, true);
    });
  }

  test('refuses what it cannot parse, saying why', () => {
    assert.match(PacketView.parse(Buffer.alloc(10)) as string, /shorter than an Ethernet header/);
    assert.match(
      PacketView.parse(buildArp({ senderMac: '02:00:00:00:00:01', senderIp: '10.0.0.1', targetIp: '10.0.0.2' })) as string,
      /not IP/,
    );
    const full = buildPacket(specs[0]![1]);
    assert.match(PacketView.parse(full.subarray(0, 30)) as string, /truncated IPv4 header/);
    const bad = Buffer.from(full);
    bad[14] = 0x43;
    assert.match(PacketView.parse(bad) as string, /malformed IPv4 header/);
  });

  test('validate catches a packet a module broke', () => {
    const frame = buildPacket(specs[0]![1]);
    const v = view(frame);
    frame.writeUInt16BE(frame.length, 16); // total length now runs past the frame
    assert.match(v.validate()!, /runs past the frame/);
    const f2 = buildPacket(specs[0]![1]);
    const v2 = view(f2);
    f2[14] = 0x44; // header length 16
    assert.match(v2.validate()!, /IPv4 header is broken/);
    const f3 = buildPacket(specs[3]![1]);
    const v3 = view(f3);
    f3.writeUInt16BE(2000, 18); // IPv6 payload length
    assert.match(v3.validate()!, /runs past the frame/);
  });

  test('refuses a DSCP outside 0-63', () => {
    assert.throws(() => view(buildPacket(specs[0]![1])).setDscp(64), /DSCP 64 is not 0-63/);
  });
  test('insert and remove grow and shrink a packet at its front, within its room', () => {
    const inner = buildPacket(specs[1]![1]);
    const outerSpec: PacketSpec = { family: 4, src: '10.9.0.1', dst: '10.9.0.2', proto: 'udp', sport: 7, dport: 8 };
    const outer = buildPacket({ ...outerSpec, payload: inner.subarray(14) }).subarray(14, 14 + 28);
    // a frame as AF_XDP gives it: 256 bytes of headroom in front
    const buf = Buffer.alloc(4096);
    inner.copy(buf, 256);
    const v = PacketView.parse(buf.subarray(256, 256 + inner.length), { buf, start: 0 }) as PacketView;
    const l3 = v.l3;
    v.insert(l3, outer);
    assert.equal(v.data.length, inner.length + 28);
    assert.equal(v.data.byteOffset - buf.byteOffset, 256 - 28, 'it grew at the front: the end stays');
    assert.deepEqual(v.data.subarray(0, l3), inner.subarray(0, l3), 'the Ethernet header (with its VLAN tag) moved along');
    assert.deepEqual([v.proto, v.src, v.dst, v.dport], [17, '10.9.0.1', '10.9.0.2', 8], 'parsed again: the outer header now');
    assert.deepEqual(v.data.subarray(l3 + 28), inner.subarray(l3));
    v.remove(l3, 28);
    assert.deepEqual(v.data, inner, 'and back as it was');
    assert.equal(v.proto, 6);
    assert.throws(() => v.remove(10, 4), /not within the packet/);
    assert.throws(() => view(buildPacket(specs[0]![1])).insert(14, outer), /no room for 28 more bytes/);
    assert.throws(
      () => (PacketView.parse(buf.subarray(256, 256 + inner.length), { buf, start: 250 }) as PacketView).insert(l3, outer),
      /no room/,
    );
    assert.throws(() => v.insert(l3, Buffer.alloc(20)), /no longer one itm can send on/, 'a zeroed IPv4 header is no IP packet');
    assert.throws(() => v.redirect(0), /no device index/);
  });

  test('insert completes a checksum left for offload before it encapsulates', () => {
    const spec = specs[0]![1];
    const frame = buildPacket({ ...spec, l4Checksum: 0x1234 });
    const buf = Buffer.alloc(512);
    frame.copy(buf, 256);
    const v = PacketView.parse(buf.subarray(256, 256 + frame.length), { buf, start: 0 }) as PacketView;
    v.modified = true; // as a module that rewrote it
    v.insert(
      14,
      buildPacket({ family: 4, src: '10.9.0.1', dst: '10.9.0.2', proto: 'udp', sport: 7, dport: 8, payload: frame.subarray(14) }).subarray(
        14,
        42,
      ),
    );
    assert.equal(parsePacket(Buffer.concat([v.data.subarray(0, 14), v.data.subarray(42)])).l4ChecksumOk, true);
  });
});
