import {
  bytesToAddr,
  decode,
  defineModule,
  dscpName,
  encode,
  itm_flow,
  ItmError,
  protoName,
  registerLayouts,
  type BpfMap,
  type ItmFlow,
  type ParamValue,
} from '../../src/sdk.js';
import * as abi from './qos.abi.js';
import { EVERY, MAX_LEVELS, parseLevels, type Level } from './levels.js';
import { FlowSizes, thresholdForBytes, thresholdForFlows } from './controller.js';

/** the adaptive controller waits for this many flows before it moves the threshold */
const MIN_FLOWS_TO_LEARN = 10;

registerLayouts(abi.layouts);

/** CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns */
const monotonicNs = () => process.hrtime.bigint();

/** The levels the parameters ask for: --threshold N is itmBench's two classes, short flows EF. */
export function levelsOf(params: Record<string, unknown>): Level[] {
  const { threshold, levels } = params;
  if (threshold !== undefined && levels !== undefined) throw new ItmError('qos: give --threshold or --levels, not both');
  if (levels !== undefined) return parseLevels(String(levels));
  if (threshold === undefined)
    throw new ItmError('qos: give --threshold N (packets, or bytes with --by bytes) or --levels T1:DSCP,...,*:DSCP');
  return [
    { threshold: BigInt(threshold as number), dscp: 46 },
    { threshold: EVERY, dscp: 0 },
  ];
}

interface LiveFlow {
  key: string;
  flow: ItmFlow;
  state: abi.QosFlowState;
  size: number;
}

/** The flows in the table that are still flows (not finished, not idle past the timeout). */
function liveFlows(table: BpfMap, params: Record<string, ParamValue>): LiveFlow[] {
  const now = monotonicNs();
  const idleNs = BigInt(params['idle-timeout'] as number) * 1_000_000_000n;
  const byBytes = params.by === 'bytes';
  return table.entries().flatMap(([k, v]) => {
    const state = decode<abi.QosFlowState>(abi.qos_flow_state, v);
    if ((idleNs > 0n && now - state.last_ns > idleNs) || state.closing) return [];
    return [{ key: k.toString('hex'), flow: decode<ItmFlow>(itm_flow, k), state, size: Number(byBytes ? state.bytes : state.packets) }];
  });
}

export default defineModule({
  name: 'qos',
  description: 'size-aware DSCP marking: a flow starts in the first level and moves down as it grows past each threshold',
  hooks: ['xdp', 'tc-ingress', 'tc-egress'],
  params: {
    // the parameters in qos_cfg (a global in .bss) and those only its periodic functions read are
    // taken by a running instance in place (itmctl apply); table-size and bidir reload it
    threshold: {
      type: 'int',
      live: true,
      min: 1,
      describe: 'two classes: flows up to N packets (or bytes) are short (EF), larger ones long (best effort)',
    },
    levels: {
      type: 'string',
      live: true,
      describe: `up to ${MAX_LEVELS} levels, THRESHOLD:DSCP,...,*:DSCP, thresholds increasing, e.g. 100:af41,1000:af21,*:cs1`,
    },
    by: { type: 'string', live: true, default: 'packets', describe: "what a flow's size counts: packets or bytes" },
    'table-size': {
      type: 'int',
      min: 64,
      max: 16_777_216,
      default: 262_144,
      describe: 'flows kept at once; a full table evicts the least recently used',
    },
    bidir: {
      type: 'bool',
      default: false,
      describe:
        'count both directions of a connection as one flow (load it at tc-ingress and tc-egress of the device, both with --bidir: they share one table)',
    },
    'tcp-seq': {
      type: 'bool',
      live: true,
      default: false,
      describe: 'count TCP bytes by sequence progress, so retransmissions do not make a flow bigger',
    },
    adaptive: {
      type: 'bool',
      live: true,
      default: false,
      describe: 'move the threshold (with --threshold) so that --target-short of the bytes or flows stay short; run by itmctl watch',
    },
    'target-short': {
      type: 'number',
      live: true,
      min: 0.001,
      max: 1,
      default: 0.1,
      describe: 'with --adaptive: the fraction to keep short',
    },
    'target-of': { type: 'string', live: true, default: 'bytes', describe: 'with --adaptive: what the fraction counts, bytes or flows' },
    'idle-timeout': {
      type: 'int',
      live: true,
      min: 0,
      max: 86_400,
      default: 30,
      describe: 'seconds: a flow idle this long has ended, and its next packet starts a new flow (0: never)',
    },
  },
  periodic: {
    intervalMs: 1000,
    // class-update: flows, packets and bytes in each level now
    classUpdate: (ctx) => {
      const levels = levelsOf(ctx.params);
      const out: Record<string, number | string> = {};
      const flows = liveFlows(ctx.open('qos_flows'), ctx.params);
      levels.forEach((l, i) => {
        const mine = flows.filter((f) => Math.min(f.state.level, levels.length - 1) === i);
        out[`level ${i + 1} (${dscpName(l.dscp)})`] =
          `${mine.length} flows, ${mine.reduce((a, f) => a + Number(f.state.packets), 0)} packets, ${mine.reduce((a, f) => a + Number(f.state.bytes), 0)} bytes`;
      });
      return out;
    },
    // controller-update: with --adaptive, the threshold that keeps --target-short of the bytes
    // (or flows) short, learnt from the sizes of the flows seen, written in place
    controllerUpdate: (ctx) => {
      if (!ctx.params.adaptive) return undefined;
      ctx.state.sizes ??= new FlowSizes();
      const sizes = ctx.state.sizes as FlowSizes;
      sizes.observe(new Map(liveFlows(ctx.open('qos_flows'), ctx.params).map((f) => [f.key, f.size])));
      const all = sizes.sizes();
      if (all.length < MIN_FLOWS_TO_LEARN) return undefined;
      const target = ctx.params['target-short'] as number;
      const next = ctx.params['target-of'] === 'flows' ? thresholdForFlows(all, target) : thresholdForBytes(all, target);
      const g = ctx.global('qos_cfg');
      const cfg = decode<abi.QosConfig>(abi.qos_config, Buffer.from(g.read()));
      const now = Number(cfg.levels[0]!.threshold);
      if (next === now) return undefined;
      cfg.levels[0]!.threshold = BigInt(next);
      g.write(encode(abi.qos_config, cfg));
      return `threshold ${now} → ${next} (learnt from ${all.length} flows: ${target * 100}% of the ${ctx.params['target-of']} short)`;
    },
  },
  kernel: {
    object: 'qos/qos.bpf.o',
    // with --bidir, the instances of one name at tc-ingress and tc-egress of a device keep one table,
    // so that the two directions of a connection count as one flow
    sharedMaps: (params) => (params.bidir ? ['qos_flows'] : []),
    flows: (open, params) => {
      const levels = levelsOf(params);
      const now = monotonicNs();
      return liveFlows(open('qos_flows'), params).map(({ flow: f, state: s, size }) => {
        const level = Math.min(s.level, levels.length - 1);
        return {
          proto: protoName(f.proto),
          src: bytesToAddr(f.saddr, f.family as 4 | 6),
          dst: bytesToAddr(f.daddr, f.family as 4 | 6),
          sport: f.sport,
          dport: f.dport,
          size,
          packets: Number(s.packets),
          bytes: Number(s.bytes),
          level: level + 1,
          dscp: dscpName(levels[level]!.dscp),
          idle_s: Number((now - s.last_ns) / 1_000_000n) / 1000,
        };
      });
    },
    configure: (p) => {
      if (p.by !== 'packets' && p.by !== 'bytes') throw new ItmError(`qos: invalid --by '${String(p.by)}': packets or bytes`);
      if (p['target-of'] !== 'bytes' && p['target-of'] !== 'flows')
        throw new ItmError(`qos: invalid --target-of '${String(p['target-of'])}': bytes or flows`);
      if (p.adaptive && p.threshold === undefined)
        throw new ItmError('qos: --adaptive moves the one threshold of --threshold N; it does not work with --levels');
      const levels = levelsOf(p);
      const cfg: abi.QosConfig = {
        n_levels: levels.length,
        by_bytes: p.by === 'bytes' ? 1 : 0,
        bidir: p.bidir ? 1 : 0,
        tcp_seq: p['tcp-seq'] ? 1 : 0,
        pad: 0,
        idle_ns: BigInt(p['idle-timeout'] as number) * 1_000_000_000n,
        levels: levels.map((l) => ({ threshold: l.threshold, dscp: l.dscp, pad: Buffer.alloc(7) })),
      };
      return { globals: { qos_cfg: encode(abi.qos_config, cfg) }, maxEntries: { qos_flows: Number(p['table-size']) } };
    },
  },
});

export const describeLevels = (levels: Level[]) =>
  levels.map((l) => `${l.threshold === EVERY ? '*' : `≤${l.threshold}`}:${dscpName(l.dscp)}`).join(' ');
