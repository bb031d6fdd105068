// A plan carried out all or nothing: each step goes through the control layer (the agent or this
// process, as for itmctl load and unload) and registers how to take it back in one transaction
// (src/registry/undo.ts); a step that fails is undone by the registry itself, and the steps before
// it are then undone in reverse, so the node is left as it was.
import { loadModule, unloadModule } from '../control.js';
import { ItmError } from '../errors.js';
import { down, list, reorder, setParams, up, type LoadOptions } from '../registry/index.js';
import { Undo } from '../registry/undo.js';
import { reorders, type Placed, type Plan, type Step } from './plan.js';
import type { Instance, NodeState } from './state.js';

/** How to load an instance: one a file asks for with what it gave; one that ran, as it ran. */
function loadOptions(i: Instance, asRan = false): LoadOptions {
  const interest = asRan ? (i.interest === 'all' ? [] : [i.interest]) : i.given;
  return {
    module: i.spec,
    name: i.name,
    dev: i.dev,
    hook: i.hook,
    priority: i.priority,
    ...(interest !== undefined ? { interest } : {}),
    params: i.params,
  };
}

const what = (s: Step): string => {
  switch (s.op) {
    case 'unload':
      return `${s.reload ? 'reload' : 'unload'} ${s.cur.name} on ${s.cur.dev} ${s.cur.hook}`;
    case 'set':
      return `${s.want.at}: set ${s.changed.join(', ')} of ${s.want.name} on ${s.want.dev} ${s.want.hook}`;
    case 'load':
      return `${s.want.at}: ${s.reload ? 'reload' : 'load'} ${s.want.name} on ${s.want.dev} ${s.want.hook}`;
    case 'reorder':
      return `reorder ${s.name} on ${s.dev} ${s.hook}`;
    case 'up':
    case 'down':
      return `${s.op} ${s.dev} ${s.hooks.join(' ')}`;
  }
};

async function run(s: Step, undo: Undo): Promise<void> {
  switch (s.op) {
    case 'unload': {
      const cur = s.cur;
      await unloadModule(cur.name, cur.dev, cur.hook);
      undo.addAsync(`load ${cur.name} on ${cur.dev} ${cur.hook} again`, async () => {
        await loadModule(loadOptions(cur, true));
      });
      return;
    }
    case 'set': {
      const { cur, want } = s;
      await setParams(want.name, want.dev, want.hook, want.params);
      undo.addAsync(`put back the parameters of ${cur.name} on ${cur.dev} ${cur.hook}`, async () => {
        await setParams(cur.name, cur.dev, cur.hook, cur.params);
      });
      return;
    }
    case 'load': {
      const w = s.want;
      const r = await loadModule(loadOptions(w));
      undo.addAsync(`unload ${w.name} from ${w.dev} ${w.hook}`, async () => {
        await unloadModule(w.name, w.dev, w.hook);
        if (r.broughtUp) down(w.dev, [w.hook]);
      });
      return;
    }
    case 'up': {
      const res = up(s.dev, s.hooks);
      const made = s.hooks.filter((h) => res[h] === 'created');
      if (made.length) undo.add(`take ${s.dev} ${made.join(' ')} down`, () => down(s.dev, made));
      return;
    }
    case 'reorder':
      // undone with every chain's order, last of all (see executePlan)
      reorder(s.name, s.dev, s.priority, s.hook);
      return;
    case 'down':
      down(s.dev, s.hooks);
      undo.add(`set ${s.dev} ${s.hooks.join(' ')} up again`, () => up(s.dev, s.hooks));
      return;
  }
}

/** Puts each chain of `was` back in its order and priorities, where it holds the same instances
 * again: undone unloads load again last among their equals. */
function restoreOrder(was: NodeState): void {
  for (const d of was.devices) {
    let live: ReturnType<typeof list>;
    try {
      live = list(d.dev);
    } catch {
      continue; // the device is gone: nothing to put back
    }
    for (const hook of d.hooks) {
      const original: Placed[] = d.instances.filter((i) => i.hook === hook);
      const now: Placed[] = live[0]?.hooks.find((h) => h.hook === hook)?.modules ?? [];
      const names = (xs: Placed[]) => JSON.stringify(xs.map((x) => x.name).sort());
      if (names(now) !== names(original)) continue;
      for (const p of reorders(now, original)) reorder(p.name, d.dev, p.priority, hook);
    }
  }
}

/** Carries out a plan; on a failure, undoes what it did and throws what failed, with where. */
export async function executePlan(plan: Plan): Promise<void> {
  if (!plan.steps.length) return;
  const undo = new Undo();
  // registered first, so undone last: after every other step is taken back
  undo.add('put the chains back in their order', () => restoreOrder(plan.current));
  let done = 0;
  for (const s of plan.steps) {
    try {
      await run(s, undo);
      done++;
    } catch (e) {
      const err = await undo.rollbackAsync(e);
      const msg = err instanceof Error ? err.message : String(err);
      const hint = err instanceof ItmError ? err.hint : undefined;
      const tail = err === e ? `; nothing was changed${done ? ` (the ${done} change${done > 1 ? 's' : ''} before it undone)` : ''}` : '';
      throw new ItmError(`${what(s)}: ${msg}${tail}`, hint, { cause: e });
    }
  }
}
