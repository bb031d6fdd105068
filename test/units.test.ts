// Unit tests of the pure control-plane code: interests, addresses, DSCP, module parameters, the
// ABI codec and `explain`'s flow parser. No root, no kernel, no namespaces.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as abi from '../src/abi.js';
import { ItmError } from '../src/errors.js';
import { encodeSlot, formatInterest, lpmKey, mismatch, parseInterest, type FlowQuery } from '../src/interest.js';
import { addrToBytes, bytesToAddr, parsePrefix, type Prefix } from '../src/netaddr.js';
import { dscpName, parseDscp } from '../src/dscp.js';
import { checkDefinition, defineModule, hostFunctions, kernelConfig, validateParams } from '../src/module-def.js';
import { parseFlow } from '../src/cli/flow.js';
import { YamlReader } from '../src/yaml-reader.js';

/** fn throws an ItmError whose message matches re (so the message names what is wrong). */
function throwsItm(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ItmError, `expected an ItmError, got ${String(e)}`);
    assert.match(e.message, re);
    return true;
  });
}

const hex = (b: Buffer) => b.toString('hex');
const mapped = (v4: string) => Buffer.from(`00000000000000000000ffff${v4}`, 'hex');
const prefix = (s: string): Prefix => {
  const p = parsePrefix(s);
  assert.ok(typeof p !== 'string', `parsePrefix(${s}) failed: ${String(p)}`);
  return p;
};

describe('parseInterest', () => {
  test('the spec example: proto, dport and a dst prefix', () => {
    const it = parseInterest('proto=udp,dport=5001,dst=10.0.0.0/8');
    assert.deepEqual(it.protos, [17]);
    assert.deepEqual(it.dport, [{ lo: 5001, hi: 5001 }]);
    assert.deepEqual(it.sport, []);
    assert.deepEqual(it.src, []);
    assert.equal(it.dst.length, 1);
    assert.equal(it.dst[0]!.text, '10.0.0.0/8');
    assert.equal(it.dst[0]!.family, 4);
    assert.equal(it.dst[0]!.len, 8);
  });

  test('port ranges', () => {
    assert.deepEqual(parseInterest('dport=1000-2000').dport, [{ lo: 1000, hi: 2000 }]);
    assert.deepEqual(parseInterest('sport=0-65535').sport, [{ lo: 0, hi: 65535 }]);
  });

  test('repeated keys form sets, within one spec and across several', () => {
    assert.deepEqual(parseInterest('proto=tcp,proto=udp,proto=tcp').protos, [6, 17]);
    const it = parseInterest(['proto=tcp', 'dport=80,dport=443', 'dport=8000-8080', 'origin=local,origin=local']);
    assert.deepEqual(it.protos, [6]);
    assert.deepEqual(it.dport, [
      { lo: 80, hi: 80 },
      { lo: 443, hi: 443 },
      { lo: 8000, hi: 8080 },
    ]);
    assert.deepEqual(it.origin, ['local']);
  });

  test('keys and protocol names are case-insensitive; numbers, families, devices', () => {
    const it = parseInterest(' PROTO = UDP , proto=132, family=ipv6, family=4, indev=eth0, outdev=eth1 ');
    assert.deepEqual(it.protos, [17, 132]);
    assert.deepEqual(it.family, [6, 4]);
    assert.equal(it.indev, 'eth0');
    assert.equal(it.outdev, 'eth1');
  });

  test('no spec at all is the empty interest', () => {
    for (const s of [undefined, [], '', ' , ']) {
      const it = parseInterest(s);
      assert.equal(it.protos.length + it.src.length + it.dst.length + it.sport.length + it.dport.length, 0);
      assert.equal(it.indev, undefined);
    }
  });

  test('dport=99999 is out of range', () => throwsItm(() => parseInterest('dport=99999'), /dport=99999: ports are 0-65535/));
  test('a port that is not a number', () => throwsItm(() => parseInterest('sport=http'), /sport=http/));
  test('src=10.0.0.0/33 is rejected naming the prefix length', () =>
    throwsItm(() => parseInterest('src=10.0.0.0/33'), /src=10\.0\.0\.0\/33: prefix length \/33 .*IPv4 \(0-32\)/));
  test('dst=fd00::/129 is rejected', () => throwsItm(() => parseInterest('dst=fd00::/129'), /dst=fd00::\/129: .*\/129/));
  test('dst that is not an address', () => throwsItm(() => parseInterest('dst=example.com'), /dst=example\.com: 'example\.com' is not/));
  test('an unknown key is named', () => throwsItm(() => parseInterest('proto=udp,port=53'), /invalid interest key 'port'/));
  test('an empty value is named', () => throwsItm(() => parseInterest('proto=udp,dport='), /'dport=': empty value/));
  test('a part without = is named', () => throwsItm(() => parseInterest('udp'), /'udp': expected key=value/));
  test('a reversed range dport=2000-1000 is empty', () =>
    throwsItm(() => parseInterest('dport=2000-1000'), /dport=2000-1000: the range is empty/));
  test('ports with proto=icmp only', () =>
    throwsItm(() => parseInterest('proto=icmp,dport=80'), /ports given but proto=icmp has no ports/));
  test('ports with icmp and icmpv6 only, across specs', () =>
    throwsItm(() => parseInterest(['proto=icmp,proto=icmpv6', 'sport=1']), /proto=icmp\/icmpv6 has no ports/));
  test('ports with icmp and tcp are fine (tcp has ports)', () => {
    assert.deepEqual(parseInterest('proto=icmp,proto=tcp,dport=80').dport, [{ lo: 80, hi: 80 }]);
  });
  test(`at most ${abi.ITM_MAX_PORT_RANGES} port ranges per key`, () => {
    const ports = (n: number) => Array.from({ length: n }, (_, i) => `dport=${1000 + i}`);
    assert.equal(parseInterest(ports(abi.ITM_MAX_PORT_RANGES)).dport.length, abi.ITM_MAX_PORT_RANGES);
    throwsItm(() => parseInterest(ports(abi.ITM_MAX_PORT_RANGES + 1)), /at most 8 dport values or ranges/);
    // the limit is per key: 8 sport and 8 dport together are fine
    const both = parseInterest([...ports(8), ...ports(8).map((p) => p.replace('dport', 'sport'))]);
    assert.equal(both.sport.length, 8);
  });
  test('bad proto, origin, family and a second indev are named', () => {
    throwsItm(() => parseInterest('proto=256'), /proto=256/);
    throwsItm(() => parseInterest('proto=bogus'), /proto=bogus/);
    throwsItm(() => parseInterest('origin=remote'), /origin=remote: use local or forwarded/);
    throwsItm(() => parseInterest('family=5'), /family=5: use 4 or 6/);
    throwsItm(() => parseInterest('indev=eth0,indev=eth1'), /one indev only \(got eth0 and eth1\)/);
  });
  test('proto names that are Object.prototype properties are rejected', () => {
    throwsItm(() => parseInterest('proto=constructor'), /proto=constructor/);
    throwsItm(() => parseInterest('proto=__proto__'), /proto=__proto__/);
  });
});

describe('formatInterest', () => {
  test('the canonical form, host bits cleared', () => {
    assert.equal(formatInterest(parseInterest('dport=5001,dst=10.1.2.3/8,proto=udp')), 'proto=udp,dst=10.0.0.0/8,dport=5001');
    assert.equal(formatInterest(parseInterest([])), 'all');
  });
  test('parse → format → parse is the same interest', () => {
    const spec = [
      'family=6,family=4,proto=tcp,proto=200,src=fd00:1::5/32,src=192.168.1.0/24',
      'dst=::/0,sport=1-1024,dport=443,dport=8000-8080,indev=eth0,outdev=eth1,origin=forwarded',
    ];
    const a = parseInterest(spec);
    const text = formatInterest(a);
    assert.match(text, /src=fd00:1::\/32/);
    assert.deepEqual(parseInterest(text), a);
  });
  test('round trip of an IPv4-mapped IPv6 prefix', () => {
    const a = parseInterest('src=::ffff:10.0.0.0/104');
    assert.deepEqual(parseInterest(formatInterest(a)), a);
  });
});

describe('encodeSlot', () => {
  test('flags and protocol bitmap of the spec example', () => {
    const s = encodeSlot(3, parseInterest('proto=udp,dport=5001,dst=10.0.0.0/8'), {});
    assert.equal(s.id, 3);
    assert.equal(s.flags, abi.ITM_I_PROTO | abi.ITM_I_DST | abi.ITM_I_DPORT);
    assert.deepEqual(s.protos, [1n << 17n, 0n, 0n, 0n]);
    assert.equal(s.n_sport, 0);
    assert.equal(s.n_dport, 1);
    assert.deepEqual(s.dport, [{ lo: 5001, hi: 5001 }]);
    assert.equal(s.indev, 0);
  });
  test('protocols above 63 land in the right word and bit', () => {
    const s = encodeSlot(1, parseInterest('proto=tcp,proto=sctp,proto=255,proto=63'), {});
    assert.deepEqual(s.protos, [(1n << 6n) | (1n << 63n), 0n, 1n << 4n, 1n << 63n]);
  });
  test('devices, origins, families and source ports set their flags', () => {
    const s = encodeSlot(2, parseInterest('sport=1-2,src=fd00::/8,origin=local,origin=forwarded,family=4,family=6'), {
      indev: 7,
      outdev: 9,
    });
    assert.equal(
      s.flags,
      abi.ITM_I_SRC |
        abi.ITM_I_SPORT |
        abi.ITM_I_INDEV |
        abi.ITM_I_OUTDEV |
        abi.ITM_I_LOCAL |
        abi.ITM_I_FORWARDED |
        abi.ITM_I_IPV4 |
        abi.ITM_I_IPV6,
    );
    assert.equal(s.indev, 7);
    assert.equal(s.outdev, 9);
    assert.equal(s.n_sport, 1);
  });
  test("up to four IPv4 prefixes go in the slot, masked, in the packet's byte order", () => {
    const s = encodeSlot(1, parseInterest('dst=10.2.3.4/16,dst=192.168.1.7/32,dst=0.0.0.0/0,src=10.0.0.0/8'), {});
    const le = (ip: string) => Buffer.from(ip.split('.').map(Number)).readUInt32LE(0);
    assert.equal(s.n_dst4, 3);
    assert.deepEqual(s.dst4.slice(0, 3), [
      { addr: le('10.2.0.0'), mask: le('255.255.0.0') },
      { addr: le('192.168.1.7'), mask: le('255.255.255.255') },
      { addr: 0, mask: 0 },
    ]);
    assert.equal(s.dst4.length, abi.ITM_INLINE_PREFIXES);
    assert.deepEqual([s.n_src4, s.src4[0]], [1, { addr: le('10.0.0.0'), mask: le('255.0.0.0') }]);
  });
  test('five prefixes, or an IPv6 one among them, stay in the tries alone', () => {
    const five = encodeSlot(1, parseInterest(['1', '2', '3', '4', '5'].map((n) => `dst=10.${n}.0.0/16`).join(',')), {});
    assert.equal(five.n_dst4, 0);
    assert.equal(five.flags & abi.ITM_I_DST, abi.ITM_I_DST);
    assert.equal(encodeSlot(1, parseInterest('dst=10.0.0.0/8,dst=fd00::/16'), {}).n_dst4, 0);
  });
  test('the empty interest has no flags', () => {
    assert.equal(encodeSlot(1, parseInterest([]), {}).flags, 0);
  });
});

describe('lpmKey', () => {
  test('IPv4: prefixlen counts the id and the mapped prefix', () => {
    const p = prefix('10.0.0.0/8');
    const k = lpmKey(7, p.addr, p.len, 4);
    assert.equal(k.length, abi.itm_lpm_key.size);
    assert.equal(k.readUInt32LE(0), 32 + 8 + 96 + 8);
    assert.equal(k.readUInt32LE(4), 7);
    assert.equal(k[8], 4, 'the family is part of the key');
    assert.equal(hex(k.subarray(9, 25)), hex(mapped('0a000000')));
  });
  test('IPv6', () => {
    const p = prefix('fd00::/64');
    const k = lpmKey(1, p.addr, p.len, 6);
    assert.equal(k.readUInt32LE(0), 32 + 8 + 64);
    assert.equal(k[8], 6);
    assert.equal(hex(k.subarray(9, 25)), 'fd000000000000000000000000000000');
  });
});

describe('mismatch', () => {
  const flow = (o: Partial<FlowQuery> = {}): FlowQuery => ({
    family: 4,
    proto: 17,
    src: mapped('0a000001'),
    dst: mapped('0a000002'),
    sport: 1234,
    dport: 5001,
    ...o,
  });
  const ctx = (inTrie = true, extra: { hookIfindex?: number; egress?: boolean } = {}) => ({
    hookIfindex: 4,
    egress: false,
    inTrie: () => inTrie,
    ...extra,
  });
  const slot = encodeSlot(5, parseInterest('proto=udp,dport=5001,dport=6000-6010,dst=10.0.0.0/8'), {});

  test('a matching flow has no reason', () => {
    assert.equal(mismatch(slot, flow(), ctx()), undefined);
    assert.equal(mismatch(slot, flow({ dport: 6010 }), ctx()), undefined);
  });
  test('the reasons name what differs', () => {
    assert.equal(mismatch(slot, flow({ dport: 5002 }), ctx()), 'dport 5002 is not in its interest');
    assert.equal(mismatch(slot, flow({ proto: 6 }), ctx()), 'proto tcp is not in its interest');
    assert.equal(mismatch(slot, flow(), ctx(false)), 'dst is not in its prefixes');
  });
  test("the trie is asked about the flow's dst for this slot", () => {
    const calls: Array<[string, number, string]> = [];
    mismatch(slot, flow(), {
      hookIfindex: 4,
      egress: false,
      inTrie: (w, id, a) => {
        calls.push([w, id, hex(a)]);
        return true;
      },
    });
    assert.deepEqual(calls, [['dst', 5, hex(mapped('0a000002'))]]);
  });
  test('family, portless protocol, device and origin reasons', () => {
    assert.equal(mismatch(encodeSlot(1, parseInterest('family=6'), {}), flow(), ctx()), 'family is IPv4');
    assert.equal(mismatch(encodeSlot(1, parseInterest('dport=53'), {}), flow({ proto: 1 }), ctx()), 'proto icmp has no ports');
    const dev = encodeSlot(1, parseInterest([]), { indev: 3 });
    assert.equal(mismatch(dev, flow(), ctx(true, { hookIfindex: 4 })), 'it came in on another device');
    assert.equal(mismatch(dev, flow(), ctx(true, { hookIfindex: 3 })), undefined);
    const local = encodeSlot(1, parseInterest('origin=local'), {});
    assert.equal(mismatch(local, flow({ local: false }), ctx()), 'origin is forwarded');
    assert.equal(mismatch(local, flow(), ctx()), undefined); // origin unknown: not a reason
  });
});

describe('netaddr', () => {
  test('addrToBytes: IPv4 is IPv4-mapped, IPv6 expands ::', () => {
    assert.deepEqual(addrToBytes('10.1.2.3'), { family: 4, addr: mapped('0a010203') });
    assert.equal(hex(addrToBytes('2001:db8::1')!.addr), '20010db8000000000000000000000001');
    assert.equal(hex(addrToBytes('::')!.addr), '0'.repeat(32));
    const m = addrToBytes('::ffff:1.2.3.4')!;
    assert.equal(m.family, 6);
    assert.equal(hex(m.addr), hex(mapped('01020304')));
  });
  test('addrToBytes: garbage is undefined', () => {
    for (const s of ['10.0.0.256', 'hello', '', '10.0.0.0/8', '1:2:3:4:5:6:7:8:9']) assert.equal(addrToBytes(s), undefined, s);
  });
  test('bytesToAddr: IPv4-mapped as dotted quad, :: for the longest zero run', () => {
    const round = (s: string) => bytesToAddr(addrToBytes(s)!.addr);
    assert.equal(round('10.1.2.3'), '10.1.2.3');
    assert.equal(round('2001:db8:0:0:1:0:0:1'), '2001:db8::1:0:0:1');
    assert.equal(round('1:0:0:1:0:0:1:1'), '1::1:0:0:1:1'); // a tie: the first run
    assert.equal(round('1:0:2:3:4:5:6:7'), '1:0:2:3:4:5:6:7'); // one zero group stays
    assert.equal(round('0:0:0:0:0:0:0:0'), '::');
    assert.equal(round('0::1'), '::1');
    assert.equal(round('FE80:0::'), 'fe80::');
    assert.equal(round('1::ffff:102:304'), '1::ffff:102:304'); // not mapped: the first 10 bytes are not zero
  });
  test('parsePrefix clears host bits', () => {
    assert.equal(prefix('10.1.2.3/8').text, '10.0.0.0/8');
    assert.equal(hex(prefix('10.1.255.3/20').addr), hex(mapped('0a01f000')));
    assert.equal(prefix('fd00:1:2:3::1/64').text, 'fd00:1:2:3::/64');
    assert.equal(prefix('fdff::/7').text, 'fc00::/7');
    assert.equal(prefix('1.2.3.4/0').text, '0.0.0.0/0');
  });
  test('parsePrefix: a bare address is a host prefix', () => {
    assert.deepEqual(prefix('10.0.0.1'), { family: 4, addr: mapped('0a000001'), len: 32, text: '10.0.0.1/32' });
    const p = prefix('fd00::1');
    assert.equal(p.len, 128);
    assert.equal(p.text, 'fd00::1/128');
  });
  test("parsePrefix: lengths out of the family's range", () => {
    assert.equal(parsePrefix('10.0.0.0/33'), 'prefix length /33 is out of range for IPv4 (0-32)');
    assert.equal(parsePrefix('fd00::/129'), 'prefix length /129 is out of range for IPv6 (0-128)');
    assert.equal(parsePrefix('10.0.0.0/64'), 'prefix length /64 is out of range for IPv4 (0-32)');
    assert.match(String(parsePrefix('10.0.0.0/-1')), /\/-1 is out of range/);
    assert.match(String(parsePrefix('10.0.0.0/')), /out of range/);
  });
  test('parsePrefix: garbage says what is wrong', () => {
    assert.equal(parsePrefix('foo'), "'foo' is not an IPv4 or IPv6 address");
    assert.equal(parsePrefix('10.0.0.0/8/9'), "'10.0.0.0/8/9' is not an address or prefix");
    assert.equal(parsePrefix('/8'), "'/8' is not an address or prefix");
  });
  test('parsePrefix rejects a scoped address instead of dropping the zone', () => {
    assert.equal(typeof parsePrefix('fe80::1%eth0'), 'string');
  });
});

describe('dscp', () => {
  test('names', () => {
    const want: Record<string, number> = { ef: 46, af41: 34, af11: 10, af43: 38, cs1: 8, cs7: 56, cs0: 0, le: 1, va: 44, be: 0, df: 0 };
    for (const [n, v] of Object.entries(want)) assert.equal(parseDscp(n), v, n);
    assert.equal(parseDscp(' EF '), 46);
  });
  test('numbers 0-63, as strings, numbers or hex', () => {
    assert.equal(parseDscp('0'), 0);
    assert.equal(parseDscp('63'), 63);
    assert.equal(parseDscp(46), 46);
    assert.equal(parseDscp('0x2e'), 46);
  });
  test('64, -1, foo and other garbage are rejected, naming the value', () => {
    throwsItm(() => parseDscp('64'), /invalid dscp '64': use 0-63/);
    throwsItm(() => parseDscp(-1), /invalid dscp '-1'/);
    throwsItm(() => parseDscp('foo', '--mark'), /invalid --mark 'foo'/);
    for (const v of ['', '1.5', 'af44', 'cs8', '0x40']) throwsItm(() => parseDscp(v), new RegExp(`invalid dscp '${v}'`));
  });
  test('Object.prototype property names are not DSCP names', () => {
    throwsItm(() => parseDscp('constructor'), /constructor/);
    throwsItm(() => parseDscp('__proto__'), /__proto__/);
  });
  test('dscpName', () => {
    assert.equal(dscpName(46), 'ef (46)');
    assert.equal(dscpName(34), 'af41 (34)');
    assert.equal(dscpName(0), 'be (0)');
    assert.equal(dscpName(5), '5');
  });
});

describe('module parameters', () => {
  const kernel = { object: 'testmod.bpf.o', program: 'testmod' };
  const def = defineModule({
    name: 'testmod',
    description: 'a test module',
    hooks: ['tc-egress'],
    kernel,
    params: {
      dscp: { type: 'dscp', describe: 'the code point', required: true, global: 'cfg_dscp' },
      rate: { type: 'int', describe: 'the rate', default: 10, min: 1, max: 1000, global: 'cfg_rate' },
      strict: { type: 'bool', describe: 'strictness', default: false, global: 'cfg_strict' },
      label: { type: 'string', describe: 'a label', global: 'cfg_label' },
    },
  });

  test('defaults fill in; an optional parameter without default is left out', () => {
    assert.deepEqual(validateParams(def, { dscp: 'ef' }), { dscp: 46, rate: 10, strict: false });
    assert.deepEqual(validateParams(def, { dscp: 8, rate: '1000', strict: 'true', label: 'x', extra: undefined }), {
      dscp: 8,
      rate: 1000,
      strict: true,
      label: 'x',
    });
  });
  test('an unknown parameter is named, with the known ones', () =>
    throwsItm(
      () => validateParams(def, { dscp: 'ef', burst: 5 }),
      /testmod: unknown parameter --burst \(its parameters: --dscp, --rate, --strict, --label\)/,
    ));
  test('a missing required parameter is named', () =>
    throwsItm(() => validateParams(def, { rate: 5 }), /testmod: --dscp is required \(the code point\)/));
  test('int: min, max and non-integers', () => {
    assert.equal(validateParams(def, { dscp: 0, rate: 1 }).rate, 1);
    throwsItm(() => validateParams(def, { dscp: 0, rate: 0 }), /invalid --rate '0': must be at least 1/);
    throwsItm(() => validateParams(def, { dscp: 0, rate: '1001' }), /invalid --rate '1001': must be at most 1000/);
    throwsItm(() => validateParams(def, { dscp: 0, rate: 'ten' }), /invalid --rate 'ten': not an integer/);
    throwsItm(() => validateParams(def, { dscp: 0, rate: 1.5 }), /invalid --rate '1.5': not an integer/);
  });
  test('bool and dscp values are checked', () => {
    throwsItm(() => validateParams(def, { dscp: 0, strict: 'yes' }), /invalid --strict 'yes': use true or false/);
    throwsItm(() => validateParams(def, { dscp: 'foo' }), /invalid --dscp 'foo'/);
  });
  test('kernelConfig maps parameters to their globals', () => {
    const cfg = kernelConfig(def, { dscp: 46, rate: 10, strict: true, label: 'ab' });
    assert.deepEqual(cfg, { globals: { cfg_dscp: 46, cfg_rate: 10, cfg_strict: 1, cfg_label: Buffer.from('ab') } });
    assert.deepEqual(kernelConfig(def, { dscp: 1 }).globals, { cfg_dscp: 1 });
    const custom = defineModule({ ...def, kernel: { ...kernel, configure: (p) => ({ maxEntries: { flows: Number(p.rate) * 2 } }) } });
    assert.deepEqual(kernelConfig(custom, { rate: 21 }), { maxEntries: { flows: 42 } });
  });
  test('defineModule rejects a bad name', () => {
    assert.throws(() => defineModule({ ...def, name: 'Bad Name' }), /module name 'Bad Name'/);
  });
  test('the two kinds: a kernel module keeps its TypeScript data path in kernel.userDatapath', () => {
    // what a plain JavaScript module file could declare, past the type checker
    const bad = (d: object) => checkDefinition({ name: 'k', hooks: ['tc-egress'], params: {}, ...d });
    assert.match(
      bad({ kernel: { object: 'k.bpf.o' }, process: () => 'accept' }) ?? '',
      /per-packet functions are in its C object .*kernel\.userDatapath/,
    );
    assert.match(
      bad({ kernel: { object: 'k.bpf.o', userDatapath: { process: () => 'accept' } } }) ?? '',
      /userDatapath\.when must be a function/,
    );
    assert.match(
      bad({ kernel: { object: 'k.bpf.o', userDatapath: { when: () => true } } }) ?? '',
      /userDatapath needs at least one of classify, log, process/,
    );
    assert.match(bad({ kernel: {} }) ?? '', /kernel\.object must name its BPF object/);
    assert.match(bad({}) ?? '', /a user-space module needs at least one of classify, log, process/);
    assert.match(bad({ process: () => 'accept', periodic: {} }) ?? '', /periodic needs an intervalMs/);
    assert.equal(bad({ kernel: { object: 'k.bpf.o', userDatapath: { when: () => true, process: () => 'accept' } } }), undefined);
    assert.equal(bad({ process: () => 'accept', periodic: { intervalMs: 100 } }), undefined);
    const userDatapath = { when: (p: Record<string, unknown>) => p.rate === 2, process: () => 'drop' as const };
    const withUser = defineModule({ ...def, kernel: { ...kernel, userDatapath } });
    assert.equal(hostFunctions(withUser, { rate: 1 }), undefined);
    assert.equal(hostFunctions(withUser, { rate: 2 }), userDatapath);
  });
});

describe('abi codec', () => {
  const fullSlot = (id: number): abi.ItmSlot => ({
    id,
    flags: abi.ITM_I_PROTO | abi.ITM_I_SPORT | abi.ITM_I_IPV6,
    protos: [1n << 63n, 2n, 0n, 0xffffffffffffffffn],
    indev: 0xffffffff,
    outdev: 2,
    n_sport: 8,
    n_dport: 0,
    user: 1,
    segments: 1,
    n_src4: 0,
    n_dst4: 4,
    pad: Buffer.alloc(2),
    sport: Array.from({ length: 8 }, (_, i) => ({ lo: i, hi: 65535 - i })),
    dport: Array.from({ length: 8 }, () => ({ lo: 0, hi: 0 })),
    src4: Array.from({ length: 4 }, () => ({ addr: 0, mask: 0 })),
    dst4: Array.from({ length: 4 }, (_, i) => ({ addr: 0x0a000000 + i, mask: 0xffffffff >>> i })),
  });

  test('generated sizes are consistent with the fields and limits', () => {
    assert.equal(abi.itm_port_range.size, 4);
    assert.equal(
      abi.itm_slot.size,
      56 + 2 * abi.ITM_MAX_PORT_RANGES * abi.itm_port_range.size + 2 * abi.ITM_INLINE_PREFIXES * abi.itm_prefix4.size,
    );
    assert.equal(abi.itm_chain.size, 8 + abi.ITM_MAX_SLOTS * abi.itm_slot.size);
    for (const l of Object.values(abi.layouts)) {
      for (const f of l.fields) assert.ok(f.offset + f.size <= l.size, `${l.name}.${f.name} overruns`);
      assert.equal(abi.encode(l, {}).length, l.size, l.name);
    }
  });
  test('itm_slot round trip: u64 as bigint, bytes as Buffer, fields at their offsets', () => {
    const s = fullSlot(0xfffffffe);
    const buf = abi.encode(abi.itm_slot, s);
    assert.equal(buf.length, abi.itm_slot.size);
    assert.equal(buf.readUInt32LE(0), 0xfffffffe);
    assert.equal(buf.readBigUInt64LE(8), 1n << 63n);
    assert.equal(buf.readUInt16LE(56 + 4 * 7 + 2), 65528);
    const d = abi.decode<abi.ItmSlot>(abi.itm_slot, buf);
    assert.deepEqual(d, s);
    assert.equal(typeof d.protos[3], 'bigint');
    assert.ok(Buffer.isBuffer(d.pad));
  });
  test('an encoded interest decodes to the same ranges', () => {
    const s = encodeSlot(9, parseInterest('proto=udp,dport=53,dport=5000-6000'), { indev: 3 });
    const d = abi.decode<abi.ItmSlot>(abi.itm_slot, abi.encode(abi.itm_slot, s));
    assert.equal(d.flags, s.flags);
    assert.deepEqual(d.protos, s.protos);
    assert.deepEqual(d.dport.slice(0, d.n_dport), [
      { lo: 53, hi: 53 },
      { lo: 5000, hi: 6000 },
    ]);
    assert.deepEqual(d.dport[2], { lo: 0, hi: 0 });
  });
  test('itm_chain round trip: nested struct array, unused slots zero', () => {
    const chain: abi.ItmChain = { n: 2, pad: 0, slots: [fullSlot(1), fullSlot(2)] };
    const buf = abi.encode(abi.itm_chain, chain);
    assert.equal(buf.length, abi.itm_chain.size);
    assert.equal(buf.readUInt32LE(8 + abi.itm_slot.size), 2); // slots[1].id
    const d = abi.decode<abi.ItmChain>(abi.itm_chain, buf);
    assert.equal(d.n, 2);
    assert.equal(d.slots.length, abi.ITM_MAX_SLOTS);
    assert.deepEqual(d.slots.slice(0, 2), chain.slots);
    assert.equal(d.slots[2]!.id, 0);
    assert.deepEqual(d.slots[15]!.protos, [0n, 0n, 0n, 0n]);
  });
  test('more array elements than room throws', () => {
    const s = { ...fullSlot(1), sport: Array.from({ length: 9 }, () => ({ lo: 1, hi: 2 })) };
    assert.throws(() => abi.encode(abi.itm_slot, s), /itm_slot\.sport: 9 elements, room for 8/);
    assert.throws(
      () => abi.encode(abi.itm_chain, { n: 17, slots: Array.from({ length: 17 }, (_, i) => fullSlot(i)) }),
      /itm_chain\.slots: 17 elements, room for 16/,
    );
    assert.throws(() => abi.encode(abi.itm_mstats, { classes: Array(9).fill(0n) }), /room for 8/);
  });
});

describe('parseFlow (explain)', () => {
  const noDev = (n: string): number => assert.fail(`resolveDev(${n}) not expected`);

  test('a full IPv4 flow', () => {
    const f = parseFlow('proto=udp,src=10.0.0.1,dst=10.0.0.2,sport=1234,dport=5001', noDev);
    assert.deepEqual(f, { family: 4, proto: 17, src: mapped('0a000001'), dst: mapped('0a000002'), sport: 1234, dport: 5001 });
  });
  test('space-separated, numeric proto, IPv6, ports default to 0', () => {
    const f = parseFlow('proto=58 src=fd00::1 dst=fd00::2', noDev);
    assert.equal(f.family, 6);
    assert.equal(f.proto, 58);
    assert.equal(hex(f.dst), 'fd000000000000000000000000000002');
    assert.equal(f.sport, 0);
    assert.equal(f.dport, 0);
  });
  test('indev is resolved; origin sets local', () => {
    const asked: string[] = [];
    const f = parseFlow('proto=tcp,src=1.1.1.1,dst=2.2.2.2,indev=eth1,origin=local', (n) => {
      asked.push(n);
      return 7;
    });
    assert.deepEqual(asked, ['eth1']);
    assert.equal(f.indev, 7);
    assert.equal(f.local, true);
    assert.equal(parseFlow('proto=tcp,src=1.1.1.1,dst=2.2.2.2,origin=forwarded', noDev).local, false);
  });
  test('missing keys are named', () => {
    throwsItm(() => parseFlow('proto=udp,src=10.0.0.1', noDev), /the flow needs dst=/);
    throwsItm(() => parseFlow('src=10.0.0.1,dst=10.0.0.2', noDev), /the flow needs proto=/);
    throwsItm(() => parseFlow('proto=udp,src=,dst=10.0.0.2', noDev), /the flow needs src=/);
  });
  test('bad ports are named', () => {
    const base = 'proto=udp,src=10.0.0.1,dst=10.0.0.2';
    throwsItm(() => parseFlow(`${base},dport=99999`, noDev), /invalid flow dport=99999: ports are 0-65535/);
    throwsItm(() => parseFlow(`${base},sport=-1`, noDev), /invalid flow sport=-1/);
    throwsItm(() => parseFlow(`${base},sport=0x10`, noDev), /invalid flow sport=0x10/);
    throwsItm(() => parseFlow(`${base},dport=`, noDev), /invalid flow dport=: ports/);
  });
  test('mixed families', () =>
    throwsItm(() => parseFlow('proto=udp,src=10.0.0.1,dst=fd00::2', noDev), /src and dst are of different families/));
  test('unknown keys, bad values, missing =', () => {
    throwsItm(() => parseFlow('proto=udp,src=10.0.0.1,dst=10.0.0.2,tos=4', noDev), /invalid flow key 'tos'/);
    throwsItm(() => parseFlow('proto=udp,src=nope,dst=10.0.0.2', noDev), /invalid flow src=nope: not an IP address/);
    throwsItm(() => parseFlow('proto=udp,src=10.0.0.1,dst=10.0.0.0/8', noDev), /invalid flow dst=10\.0\.0\.0\/8/);
    throwsItm(() => parseFlow('proto=bogus,src=10.0.0.1,dst=10.0.0.2', noDev), /invalid flow proto=bogus/);
    throwsItm(() => parseFlow('proto=300,src=10.0.0.1,dst=10.0.0.2', noDev), /invalid flow proto=300/);
    throwsItm(() => parseFlow('proto=udp,src=10.0.0.1,dst=10.0.0.2,origin=remote', noDev), /origin=remote/);
    throwsItm(() => parseFlow('udp,src=10.0.0.1,dst=10.0.0.2', noDev), /invalid flow 'udp': expected key=value/);
  });
  test('proto=constructor is rejected', () => {
    throwsItm(() => parseFlow('proto=constructor,src=10.0.0.1,dst=10.0.0.2', noDev), /proto=constructor/);
  });
});

describe('YamlReader (a module configuration file)', () => {
  const doc = 'name: x\nlimits:\n  rate: 5\n  burst: big\nlist: 3\n';
  const read = () => new YamlReader(doc, 'conf.yaml', 'mod');
  const top = (r: YamlReader) => r.map(r.root, ['name', 'limits', 'list'], 'the file', 'name:, limits:');
  test('fields, integers and their defaults', () => {
    const r = read();
    const f = top(r);
    assert.equal(r.str(f, 'name').v, 'x');
    const lim = r.map(f.pairs.get('limits')!.value, ['rate', 'burst', 'size'], "'limits'", 'rate:, burst:');
    assert.equal(r.int(lim, 'rate', 1, 10, 0), 5);
    assert.equal(r.int(lim, 'size', 1, 10, 7), 7);
  });
  test('every error names the line', () => {
    const r = read();
    const f = top(r);
    const lim = r.map(f.pairs.get('limits')!.value, ['rate', 'burst'], "'limits'", 'rate:, burst:');
    assert.throws(() => r.int(lim, 'burst', 1, 10, 0), /^ItmError: mod: conf\.yaml:4: 'burst' must be an integer from 1 to 10$/);
    assert.throws(() => r.seq(f, 'list', 'numbers'), /mod: conf\.yaml:5: 'list' is a list of numbers/);
    assert.throws(() => r.str(f, 'limits'), /mod: conf\.yaml:3: 'limits' must be a single value/);
    assert.throws(() => r.map(r.root, ['name'], 'the file', 'name:'), /mod: conf\.yaml:2: unknown key 'limits' in the file \(keys: name\)/);
    assert.throws(() => r.scalar(f, 'missing'), /mod: conf\.yaml:1: the file has no 'missing'/);
    assert.throws(() => new YamlReader('a: [1\n', 'bad.yaml', 'mod'), /^ItmError: mod: bad\.yaml:\d+: /);
    assert.throws(() => new YamlReader('a: 1\na: 2\n', 'dup.yaml', 'mod'), /mod: dup\.yaml:2: Map keys must be unique/);
  });
});
