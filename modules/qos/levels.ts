// qos levels: `--threshold N` (itmBench's two classes) or `--levels 100:af41,1000:af21,*:cs1`.
import { ItmError, parseDscp } from '../../src/sdk.js';
import { QOS_MAX_LEVELS } from './qos.abi.js';

/** QOS_MAX_LEVELS of qos.bpf.c */
export const MAX_LEVELS = QOS_MAX_LEVELS;
/** the threshold of the last level, '*': every size */
export const EVERY = 0xffff_ffff_ffff_ffffn;

export interface Level {
  /** the largest size (packets or bytes) still in this level; EVERY for the last */
  threshold: bigint;
  dscp: number;
}

/**
 * A flow is in the first level whose threshold it has not passed. Thresholds must increase, and
 * the list must end with `*`, the level of every flow past the others.
 */
export function parseLevels(spec: string): Level[] {
  const parts = spec.split(',').map((s) => s.trim());
  if (parts.some((p) => !p)) throw new ItmError(`invalid --levels '${spec}': an empty level`);
  if (parts.length > MAX_LEVELS) throw new ItmError(`invalid --levels '${spec}': at most ${MAX_LEVELS} levels`);
  const levels: Level[] = [];
  parts.forEach((p, i) => {
    const colon = p.lastIndexOf(':');
    if (colon <= 0) throw new ItmError(`invalid --levels '${spec}': '${p}' is not THRESHOLD:DSCP (e.g. 100:af41, or *:cs1 last)`);
    const t = p.slice(0, colon).trim();
    const dscp = parseDscp(p.slice(colon + 1), `DSCP of --levels level '${p}':`);
    if (t === '*') {
      if (i !== parts.length - 1) throw new ItmError(`invalid --levels '${spec}': '*' must be the last level`);
      levels.push({ threshold: EVERY, dscp });
      return;
    }
    if (!/^\d+$/.test(t) || BigInt(t) === 0n)
      throw new ItmError(`invalid --levels '${spec}': threshold '${t}' must be a positive whole number`);
    const threshold = BigInt(t);
    const prev = levels[levels.length - 1];
    if (prev && threshold <= prev.threshold)
      throw new ItmError(`invalid --levels '${spec}': thresholds must increase (${prev.threshold} then ${threshold})`);
    levels.push({ threshold, dscp });
  });
  if (levels[levels.length - 1]!.threshold !== EVERY)
    throw new ItmError(`invalid --levels '${spec}': the last level must be '*' (e.g. ...,*:cs1), the level of every larger flow`);
  return levels;
}

export function formatLevels(levels: Level[]): string {
  return levels.map((l) => `${l.threshold === EVERY ? '*' : l.threshold}:${l.dscp}`).join(',');
}
