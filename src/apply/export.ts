// A node's state written as a node file (document.ts reads it back): what `itmctl export` prints.
// It says what differs from the defaults only (a module's parameters, its name, priority and
// interest), and an instance a load put at each hook of a module's hook set (route) as one entry,
// so that what is written reads like the commands that made it. Reading it back gives the same
// state: `itmctl export | itmctl apply -f -` changes nothing.
import { Document, type YAMLSeq } from 'yaml';
import { resolveModule } from '../catalog.js';
import { dscpName } from '../dscp.js';
import { formatInterest } from '../interest.js';
import { nonDefaultParams, type Hook, type ModuleDef, type ParamValue } from '../module-def.js';
import { interestAt } from '../registry/chain.js';
import { DEFAULT_PRIORITY } from '../registry/records.js';
import type { Instance, NodeState } from './state.js';

interface Entry {
  module: string;
  name?: string;
  hook?: Hook;
  priority?: number;
  interest?: string;
  params?: Record<string, ParamValue>;
}

const HEADER = '# the state of this node, as itmctl export wrote it: itmctl apply -f FILE makes a node match it\n';

/** the interest an instance has at `hook` when given `given`; undefined if it cannot be said */
function interestWith(def: ModuleDef, i: Instance, hook: Hook, given: string[] | undefined): string | undefined {
  try {
    return formatInterest(interestAt(def, i.params, hook, given));
  } catch {
    return undefined;
  }
}

/** The parameters that differ from their defaults; a DSCP by its name. */
function paramsOf(def: ModuleDef | undefined, params: Record<string, ParamValue>): Record<string, ParamValue> | undefined {
  const out: Record<string, ParamValue> = {};
  for (const [k, v] of Object.entries(def ? nonDefaultParams(def, params) : params)) {
    const name = def?.params[k]?.type === 'dscp' && typeof v === 'number' ? /^(\S+) \(\d+\)$/.exec(dscpName(v))?.[1] : undefined;
    out[k] = name ?? v;
  }
  return Object.keys(out).length ? out : undefined;
}

function entryOf(def: ModuleDef | undefined, i: Instance, hook: Hook | undefined, given: string[] | undefined): Entry {
  const interest = given === undefined ? undefined : given.length ? given.join(',') : 'all';
  const params = paramsOf(def, i.params);
  return {
    module: i.spec,
    ...(i.name !== i.module ? { name: i.name } : {}),
    ...(hook ? { hook } : {}),
    ...(i.priority !== DEFAULT_PRIORITY ? { priority: i.priority } : {}),
    ...(interest !== undefined ? { interest } : {}),
    ...(params ? { params } : {}),
  };
}

/** What to give as the interest so that every one of `insts` gets its own: nothing (the module's),
 * or one of theirs as it is; undefined when no one interest does. */
function givenFor(def: ModuleDef | undefined, insts: Instance[]): { given: string[] | undefined } | undefined {
  const own = insts.map((i) => (i.interest === 'all' ? [] : [i.interest]));
  if (!def) return insts.length === 1 ? { given: own[0] } : undefined;
  for (const c of [undefined, ...own]) if (insts.every((i) => interestWith(def, i, i.hook, c) === i.interest)) return { given: c };
  return undefined;
}

/** The node file of a state: YAML, or with `json` the same document as JSON (which YAML reads). */
export async function formatNode(state: NodeState, opts: { json?: boolean } = {}): Promise<string> {
  const defs = new Map<string, ModuleDef | undefined>();
  for (const i of state.devices.flatMap((d) => d.instances)) {
    if (!defs.has(i.spec))
      defs.set(
        i.spec,
        await resolveModule(i.spec).then(
          (r) => r.def,
          () => undefined,
        ),
      );
  }
  const devices: Record<string, { hooks: Hook[]; modules?: Entry[] }> = {};
  for (const d of state.devices) {
    const entries: Entry[] = [];
    const done = new Set<Instance>();
    for (const i of d.instances) {
      if (done.has(i)) continue;
      const def = defs.get(i.spec);
      // one load at each hook of a hook set: one entry without a hook, if one reads back as all
      const set = def?.kernel?.hookSet;
      if (set?.includes(i.hook)) {
        const group = d.instances.filter((x) => x.name === i.name && x.spec === i.spec && set.includes(x.hook));
        const same = group.every((x) => x.priority === i.priority && JSON.stringify(x.params) === JSON.stringify(i.params));
        const g = same && group.length === set.length ? givenFor(def, group) : undefined;
        if (g) {
          for (const x of group) done.add(x);
          entries.push(entryOf(def, i, undefined, g.given));
          continue;
        }
      }
      done.add(i);
      // the module's last hook is where a load without --hook puts it; say the hook anyway
      const g = givenFor(def, [i]) ?? { given: [i.interest] };
      entries.push(entryOf(def, i, i.hook, g.given));
    }
    devices[d.dev] = { hooks: d.hooks, ...(entries.length ? { modules: entries } : {}) };
  }
  if (opts.json) return `${JSON.stringify({ devices }, null, 2)}\n`;
  const doc = new Document({ devices });
  // hooks on one line, as they are written by hand
  for (const dev of Object.keys(devices)) (doc.getIn(['devices', dev, 'hooks'], true) as YAMLSeq).flow = true;
  return HEADER + doc.toString({ lineWidth: 0 });
}
