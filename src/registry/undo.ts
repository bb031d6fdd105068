// Transactions: each step of an operation registers how to take it back; a failure runs them.
// One mechanism for a single registry operation (whose steps are synchronous) and for an apply of
// a node's whole state (src/apply/), whose steps go through the control layer and may be async.
import { ItmError } from '../errors.js';
import { log } from '../log.js';

/** Undo steps, run in reverse when a transaction fails. */
export class Undo {
  private steps: Array<[string, () => void | Promise<void>]> = [];
  /** a step and how to take it back; a bound function, to hand to helpers (divert, segment) */
  readonly add = (what: string, fn: () => void): void => {
    this.steps.push([what, fn]);
  };
  /** a step whose undoing is asynchronous (it goes through the agent, say): run by rollbackAsync */
  readonly addAsync = (what: string, fn: () => Promise<void>): void => {
    this.steps.push([what, fn]);
  };
  /** Runs the steps, latest first; returns `e`, with what could not be undone said in it. */
  rollback(e: unknown): unknown {
    const failed: string[] = [];
    for (const [what, fn] of this.take()) {
      try {
        const r = fn();
        if (r instanceof Promise) throw new Error('an asynchronous step, in a synchronous rollback');
      } catch (err) {
        failed.push(this.failure(what, err));
      }
    }
    return this.outcome(e, failed);
  }
  /** rollback, awaiting each step */
  async rollbackAsync(e: unknown): Promise<unknown> {
    const failed: string[] = [];
    for (const [what, fn] of this.take()) {
      try {
        await fn();
      } catch (err) {
        failed.push(this.failure(what, err));
      }
    }
    return this.outcome(e, failed);
  }
  /** how many steps would be undone */
  get size(): number {
    return this.steps.length;
  }

  private take(): Array<[string, () => void | Promise<void>]> {
    const steps = this.steps.reverse();
    this.steps = [];
    return steps;
  }
  private failure(what: string, err: unknown): string {
    log.debug({ err }, `undo: ${what} failed`);
    return `${what}: ${err instanceof Error ? err.message : String(err)}`;
  }
  private outcome(e: unknown, failed: string[]): unknown {
    if (!failed.length) return e;
    const msg = e instanceof Error ? e.message : String(e);
    return new ItmError(
      `${msg}; and undoing it failed (${failed.join('; ')}): run itmctl up, or down, on the device to repair`,
      undefined,
      { cause: e },
    );
  }
}
