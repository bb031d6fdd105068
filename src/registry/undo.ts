// Transactions: each step of an operation registers how to take it back; a failure runs them.
import { ItmError } from '../errors.js';
import { log } from '../log.js';

/** Undo steps, run in reverse when a transaction fails. */
export class Undo {
  private steps: Array<[string, () => void]> = [];
  /** a step and how to take it back; a bound function, to hand to helpers (divert, segment) */
  readonly add = (what: string, fn: () => void): void => {
    this.steps.push([what, fn]);
  };
  /** Runs the steps, latest first; returns `e`, with what could not be undone said in it. */
  rollback(e: unknown): unknown {
    const failed: string[] = [];
    for (const [what, fn] of this.steps.reverse()) {
      try {
        fn();
      } catch (err) {
        log.debug({ err }, `undo: ${what} failed`);
        failed.push(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.steps = [];
    if (!failed.length) return e;
    const msg = e instanceof Error ? e.message : String(e);
    return new ItmError(
      `${msg}; and undoing it failed (${failed.join('; ')}): run itmctl up, or down, on the device to repair`,
      undefined,
      { cause: e },
    );
  }
}
