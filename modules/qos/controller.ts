// qos's controller arithmetic, kept pure so that it can be tested on its own: from the sizes of the
// flows seen, the threshold that keeps a chosen fraction of the bytes (or of the flows) short.

/**
 * With threshold T, a flow of size s has min(s, T) of itself in the short class (its first T
 * packets or bytes). The fraction of bytes kept short, sum(min(s, T)) / sum(s), grows with T; the
 * result is the smallest T that reaches `target`.
 */
export function thresholdForBytes(sizes: number[], target: number): number {
  const s = sizes.filter((x) => x > 0).sort((a, b) => a - b);
  if (!s.length) throw new Error('no flows to learn from');
  if (!(target > 0 && target <= 1)) throw new Error(`target ${target} is not in (0, 1]`);
  const total = s.reduce((a, b) => a + b, 0);
  const want = target * total;
  // walk T up through the sizes: between two sizes, short(T) = sum of those below + T * (flows above)
  let below = 0;
  for (let i = 0; i < s.length; i++) {
    const above = s.length - i;
    // short(T) for T in [s[i-1], s[i]] is below + T * above; solve for want
    const t = (want - below) / above;
    if (t <= s[i]!) return Math.max(1, Math.ceil(t));
    below += s[i]!;
  }
  return s[s.length - 1]!;
}

/** The smallest T with at least `target` of the flows short, whole: the target quantile of sizes. */
export function thresholdForFlows(sizes: number[], target: number): number {
  const s = sizes.filter((x) => x > 0).sort((a, b) => a - b);
  if (!s.length) throw new Error('no flows to learn from');
  if (!(target > 0 && target <= 1)) throw new Error(`target ${target} is not in (0, 1]`);
  return s[Math.max(0, Math.ceil(target * s.length) - 1)]!;
}

/**
 * The sizes a controller learns from: flows seen in the table, each at the largest size it was
 * seen with, kept after the flow leaves the table, the most recent `capacity` of them.
 */
export class FlowSizes {
  private live = new Map<string, number>();
  private done: number[] = [];
  constructor(private readonly capacity = 10_000) {}

  /** One look at the table: flows gone since the last look are finished, at their last size. */
  observe(current: Map<string, number>): void {
    for (const [k, size] of this.live) {
      if (!current.has(k)) this.finish(size);
    }
    const next = new Map<string, number>();
    for (const [k, size] of current) next.set(k, Math.max(size, this.live.get(k) ?? 0));
    this.live = next;
  }

  private finish(size: number): void {
    this.done.push(size);
    if (this.done.length > this.capacity) this.done.splice(0, this.done.length - this.capacity);
  }

  sizes(): number[] {
    return [...this.done, ...this.live.values()];
  }
}
