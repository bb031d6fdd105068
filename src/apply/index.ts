// A node's whole state in one file: `itmctl apply`, `diff` and `export`, one job a file.
//   state.ts     the shape a node's state has, asked for or running
//   document.ts  a node file read and checked, every error naming its line
//   current.ts   what the node runs
//   plan.ts      the steps from one state to the other, and how a person reads them
//   execute.ts   the steps taken, all or nothing
//   export.ts    a node's state written as a node file
// Whatever brings a desired state (a file here; a store's key later) calls planApply and
// executePlan with a NodeState, as applyNode does.
import { readNode } from './document.js';
import { nodeState } from './current.js';
import { executePlan } from './execute.js';
import { formatNode } from './export.js';
import { describePlan, planApply, type Plan } from './plan.js';

export { readNode, nodeState, planApply, executePlan, describePlan, formatNode };
export type { Plan, Step } from './plan.js';
export type { DeviceState, Instance, NodeState } from './state.js';

export interface ApplyResult {
  plan: Plan;
  /** the changes, a line each (empty: the node matched) */
  changes: string[];
}

/** Makes the node match a node file (with `dryRun`, only says how): read and checked whole first,
 * then planned from what the node runs, then carried out all or nothing. */
export async function applyNode(text: string, file: string, opts: { dryRun?: boolean; base?: string } = {}): Promise<ApplyResult> {
  const desired = await readNode(text, file, opts.base);
  const plan = planApply(desired, await nodeState());
  if (!opts.dryRun) await executePlan(plan);
  return { plan, changes: describePlan(plan) };
}

/** The node's state as a node file (YAML, or JSON). */
export async function exportNode(opts: { json?: boolean } = {}): Promise<string> {
  return formatNode(await nodeState(), opts);
}
