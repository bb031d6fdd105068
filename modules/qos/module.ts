import { defineModule } from '../../src/module-def.js';
import { ItmError } from '../../src/errors.js';
import { decode, encode, registerLayouts } from '../../src/abi-codec.js';
import { itm_flow, type ItmFlow } from '../../src/abi.js';
import { protoName } from '../../src/interest.js';
import { bytesToAddr } from '../../src/netaddr.js';
import { dscpName } from '../../src/dscp.js';
import * as abi from './qos.abi.js';
import { EVERY, MAX_LEVELS, parseLevels, type Level } from './levels.js';

registerLayouts(abi.layouts);

/** CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns */
const monotonicNs = () => process.hrtime.bigint();

/** The levels the parameters ask for: --threshold N is itmBench's two classes, short flows EF. */
export function levelsOf(params: Record<string, unknown>): Level[] {
  const { threshold, levels } = params;
  if (threshold !== undefined && levels !== undefined) throw new ItmError('qos: give --threshold or --levels, not both');
  if (levels !== undefined) return parseLevels(String(levels));
  if (threshold === undefined) throw new ItmError('qos: give --threshold N (packets, or bytes with --by bytes) or --levels T1:DSCP,...,*:DSCP');
  return [{ threshold: BigInt(threshold as number), dscp: 46 }, { threshold: EVERY, dscp: 0 }];
}

export default defineModule({
  name: 'qos',
  description: 'size-aware DSCP marking: a flow starts in the first level and moves down as it grows past each threshold',
  hooks: ['tc-ingress', 'tc-egress'],
  kernel: { object: 'qos/qos.bpf.o' },
  params: {
    threshold: { type: 'int', min: 1, describe: 'two classes: flows up to N packets (or bytes) are short (EF), larger ones long (best effort)' },
    levels: { type: 'string', describe: `up to ${MAX_LEVELS} levels, THRESHOLD:DSCP,...,*:DSCP, thresholds increasing, e.g. 100:af41,1000:af21,*:cs1` },
    by: { type: 'string', default: 'packets', describe: 'what a flow\'s size counts: packets or bytes' },
    'table-size': { type: 'int', min: 64, max: 16_777_216, default: 262_144, describe: 'flows kept at once; a full table evicts the least recently used' },
    bidir: { type: 'bool', default: false, describe: 'count both directions of a connection as one flow' },
    'tcp-seq': { type: 'bool', default: false, describe: 'count TCP bytes by sequence progress, so retransmissions do not make a flow bigger' },
    'idle-timeout': { type: 'int', min: 0, max: 86_400, default: 30, describe: 'seconds: a flow idle this long has ended, and its next packet starts a new flow (0: never)' },
  },
  flows: (open, params) => {
    const levels = levelsOf(params);
    const byBytes = params.by === 'bytes';
    const now = monotonicNs();
    const idleNs = BigInt(params['idle-timeout'] as number) * 1_000_000_000n;
    return open('qos_flows').entries().flatMap(([k, v]) => {
      const f = decode<ItmFlow>(itm_flow, k);
      const s = decode<abi.QosFlowState>(abi.qos_flow_state, v);
      // aged out, or finished (a FIN): still in the table a while, but no longer a flow
      if ((idleNs > 0n && now - s.last_ns > idleNs) || s.closing) return [];
      const level = Math.min(s.level, levels.length - 1);
      return [{
        proto: protoName(f.proto), src: bytesToAddr(f.saddr, f.family as 4 | 6), dst: bytesToAddr(f.daddr, f.family as 4 | 6),
        sport: f.sport, dport: f.dport, size: Number(byBytes ? s.bytes : s.packets),
        packets: Number(s.packets), bytes: Number(s.bytes), level: level + 1, dscp: dscpName(levels[level]!.dscp),
        idle_s: Number((now - s.last_ns) / 1_000_000n) / 1000,
      }];
    });
  },
  configure: (p) => {
    if (p.by !== 'packets' && p.by !== 'bytes') throw new ItmError(`qos: invalid --by '${String(p.by)}': packets or bytes`);
    const levels = levelsOf(p);
    const cfg: abi.QosConfig = {
      n_levels: levels.length, by_bytes: p.by === 'bytes' ? 1 : 0, bidir: p.bidir ? 1 : 0, tcp_seq: p['tcp-seq'] ? 1 : 0, pad: 0,
      idle_ns: BigInt(p['idle-timeout'] as number) * 1_000_000_000n,
      levels: levels.map((l) => ({ threshold: l.threshold, dscp: l.dscp, pad: Buffer.alloc(7) })),
    };
    return { globals: { qos_cfg: encode(abi.qos_config, cfg) }, maxEntries: { qos_flows: Number(p['table-size']) } };
  },
});

export const describeLevels = (levels: Level[]) => levels.map((l) => `${l.threshold === EVERY ? '*' : `≤${l.threshold}`}:${dscpName(l.dscp)}`).join(' ');
