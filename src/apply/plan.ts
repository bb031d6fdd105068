// From what a node runs to what a file (or, later, a store) asks for: the steps, in the order
// they are taken. Pure: it reads two NodeStates and touches nothing, so `itmctl diff` is this
// and a print.
//
// The order: parameters set in place; then new instances loaded (in the file's order; each load
// sets up its hook if need be), before anything running is taken off, so that a load that fails
// there leaves the running instances untouched; then unloads (what is not asked for, and the old
// half of each reload); then the loads that must come after them (reloads, and new instances of a
// name that is unloaded somewhere: instances of one name may share maps, and all the old ones go
// before a new one comes); then hooks set up that hold no module, reorders, and hooks taken down.
import { changedParams, HOOKS, nonDefaultParams, whyReload, type Hook, type ParamValue } from '../module-def.js';
import { instanceKey, type Instance, type NodeState } from './state.js';

export type Step =
  /** `reload`: taken off to be loaded again (the load step says why) */
  | { op: 'unload'; cur: Instance; reload?: true }
  | { op: 'set'; cur: Instance; want: Instance; changed: string[] }
  /** `reload`: why the instance is loaded anew */
  | { op: 'load'; want: Instance; reload?: string; cur?: Instance }
  | { op: 'up'; dev: string; hooks: Hook[] }
  | { op: 'reorder'; dev: string; hook: Hook; name: string; priority: number; from: number }
  | { op: 'down'; dev: string; hooks: Hook[] };

export interface Plan {
  steps: Step[];
  /** what the node ran when the plan was made: what a failed apply goes back to */
  current: NodeState;
}

/** A chain's order, as reorder sees it. */
export interface Placed {
  name: string;
  priority: number;
}

/**
 * The reorders that take a chain from `now` to `want` (the same instances): from the first place
 * where they differ (in the instance or its priority), each instance of `want` in turn is given
 * its priority, which puts it last among its equals. What comes before that place is left alone.
 */
export function reorders(now: Placed[], want: Placed[]): Placed[] {
  const k = want.findIndex((w, i) => now[i]?.name !== w.name || now[i]?.priority !== w.priority);
  return k < 0 ? [] : want.slice(k);
}

/** A chain's order: by priority, equal ones in the order given (load order, or the file's). */
export const byPriority = <T extends { priority: number }>(xs: T[]): T[] =>
  xs
    .map((x, i) => ({ x, i }))
    .sort((a, b) => a.x.priority - b.x.priority || a.i - b.i)
    .map((e) => e.x);

const show = (v: ParamValue | undefined) => (v === undefined ? '(none)' : String(v));
export const paramChanges = (from: Record<string, ParamValue>, to: Record<string, ParamValue>): string =>
  changedParams(from, to)
    .map((k) => `${k} ${show(from[k])} → ${show(to[k])}`)
    .join(', ');

/** Why a running instance must be loaded anew to become `want`, or undefined if it need not. */
function reloadReason(cur: Instance, want: Instance): string | undefined {
  if (cur.module !== want.module) return `module ${cur.module} → ${want.module}`;
  if (cur.spec !== want.spec) return `module file ${cur.spec} → ${want.spec}`;
  if (cur.interest !== want.interest) return `interest ${cur.interest} → ${want.interest}`;
  if (!changedParams(cur.params, want.params).length) return undefined;
  const why = want.def ? whyReload(want.def, cur.params, want.params) : 'its declaration is not known';
  return why === undefined ? undefined : `${paramChanges(cur.params, want.params)} (${why})`;
}

export function planApply(desired: NodeState, current: NodeState): Plan {
  const want = new Map(desired.devices.flatMap((d) => d.instances).map((i) => [instanceKey(i), i]));
  const have = new Map(current.devices.flatMap((d) => d.instances).map((i) => [instanceKey(i), i]));
  const unloads: Step[] = [];
  const sets: Step[] = [];
  const reloads = new Map<string, string>();
  for (const cur of have.values()) {
    const w = want.get(instanceKey(cur));
    if (!w) {
      unloads.push({ op: 'unload', cur });
      continue;
    }
    const why = reloadReason(cur, w);
    if (why !== undefined) {
      reloads.set(instanceKey(cur), why);
      unloads.push({ op: 'unload', cur, reload: true });
    } else if (changedParams(cur.params, w.params).length) {
      sets.push({ op: 'set', cur, want: w, changed: changedParams(cur.params, w.params) });
    }
  }
  const loads: Step[] = [];
  const early: Step[] = [];
  const leaving = new Set(unloads.map((s) => (s.op === 'unload' ? s.cur.name : '')));
  for (const w of desired.devices.flatMap((d) => d.instances)) {
    const k = instanceKey(w);
    const cur = have.get(k);
    if (!cur) (leaving.has(w.name) ? loads : early).push({ op: 'load', want: w });
    else if (reloads.has(k)) loads.push({ op: 'load', want: w, reload: reloads.get(k)!, cur });
  }
  const ups: Step[] = [];
  const downs: Step[] = [];
  const reorderSteps: Step[] = [];
  const currentDev = new Map(current.devices.map((d) => [d.dev, d]));
  const desiredDev = new Map(desired.devices.map((d) => [d.dev, d]));
  for (const d of desired.devices) {
    const c = currentDev.get(d.dev);
    // hooks with no module that are not set up (those with modules are set up by their loads),
    // and those set up but broken, which up repairs
    const up = d.hooks.filter((h) => c?.broken?.includes(h) || (!c?.hooks.includes(h) && !d.instances.some((i) => i.hook === h)));
    if (up.length) ups.push({ op: 'up', dev: d.dev, hooks: up });
    for (const hook of d.hooks) {
      // the chain after the unloads and loads: what stays in its order, what is loaded after it
      const stays = (c?.instances ?? []).filter((i) => i.hook === hook && want.has(instanceKey(i)) && !reloads.has(instanceKey(i)));
      const loaded = [...early, ...loads].flatMap((s) => (s.op === 'load' && s.want.dev === d.dev && s.want.hook === hook ? [s.want] : []));
      const now = byPriority([...stays, ...loaded]);
      const target = byPriority(d.instances.filter((i) => i.hook === hook));
      for (const p of reorders(now, target)) {
        const from = now.find((x) => x.name === p.name)!.priority;
        reorderSteps.push({ op: 'reorder', dev: d.dev, hook, name: p.name, priority: p.priority, from });
      }
    }
  }
  for (const c of current.devices) {
    const d = desiredDev.get(c.dev);
    const gone = c.hooks.filter((h) => !d?.hooks.includes(h));
    if (gone.length) downs.push({ op: 'down', dev: c.dev, hooks: HOOKS.filter((h) => gone.includes(h)) });
  }
  return { steps: [...sets, ...early, ...unloads, ...loads, ...ups, ...reorderSteps, ...downs], current };
}

const where = (i: Instance) => `${i.name === i.module ? i.name : `${i.name} (${i.module})`} on ${i.dev} ${i.hook}`;

/** The plan as a person reads it, a line a change (a reload once, where it loads). */
export function describePlan(plan: Plan): string[] {
  return plan.steps.flatMap(describeStep);
}

function describeStep(s: Step): string[] {
  switch (s.op) {
    case 'unload':
      return s.reload ? [] : [`- unload ${where(s.cur)}`];
    case 'set':
      return [`~ set ${where(s.cur)}: ${paramChanges(s.cur.params, s.want.params)} (in place)`];
    case 'load': {
      const w = s.want;
      if (s.reload) return [`~ reload ${where(w)}: ${s.reload}`];
      const ps = Object.entries(w.def ? nonDefaultParams(w.def, w.params) : w.params)
        .map(([k, v]) => `${k}=${v}`)
        .join(' ');
      return [`+ load ${where(w)}, priority ${w.priority}, interest ${w.interest}${ps ? `, ${ps}` : ''}`];
    }
    case 'up':
      return [`+ up ${s.dev} ${s.hooks.join(' ')}`];
    case 'reorder':
      return [
        `~ reorder ${s.name} on ${s.dev} ${s.hook}: priority ${s.from === s.priority ? `${s.priority}, after its equals` : `${s.from} → ${s.priority}`}`,
      ];
    case 'down':
      return [`- down ${s.dev} ${s.hooks.join(' ')}`];
  }
}
