// A node file (`itmctl apply -f node.yaml`): read and checked whole, every error naming its line,
// before anything on the node is touched. Each module's parameters are checked against its own
// declaration (defineModule), with the checks a load makes (the module's configure, its
// interest), so that what passes here loads.
//
//   devices:
//     eth0:
//       hooks: [tc-ingress, tc-egress]     # set up, with or without modules (those with modules are)
//       modules:                           # per hook in chain order: by priority, then as listed
//         - module: mark                   # a module's name, or a module file (relative to this file)
//           name: ef                       # default: the module's name
//           hook: tc-egress                # default: the module's hook set (route), else its last hook
//           priority: 10                   # default 50
//           interest: proto=udp,dport=5001 # or a list; default: the module's own
//           params: { dscp: ef }
import { dirname, resolve } from 'node:path';
import type { Node } from 'yaml';
import { isMap, isScalar, isSeq } from 'yaml';
import * as abi from '../abi.js';
import { isModuleFile, resolveModule } from '../catalog.js';
import { ItmError } from '../errors.js';
import { formatInterest } from '../interest.js';
import {
  checkParamName,
  checkParamValue,
  HOOKS,
  kernelConfig,
  validateParams,
  type Hook,
  type ModuleDef,
  type ParamValue,
} from '../module-def.js';
import { checkInstanceName, checkPriority, interestAt, resolveInterestDevices } from '../registry/chain.js';
import { requireEthernet, resolveDevice } from '../registry/devices.js';
import { DEFAULT_PRIORITY } from '../registry/records.js';
import { type Fields, YamlReader } from '../yaml-reader.js';
import { instanceKey, type DeviceState, type Instance, type NodeState } from './state.js';

const ENTRY_KEYS = ['module', 'name', 'hook', 'priority', 'interest', 'params'] as const;
const ENTRY_SHAPE = 'module, and optionally name, hook, priority, interest, params';

/** Runs `fn`, turning an ItmError it throws into one that names the node of the file. */
function at<T>(r: YamlReader, n: Node | null | undefined, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof ItmError) r.fail(n, e.hint ? `${e.message}; ${e.hint}` : e.message);
    throw e;
  }
}
async function atAsync<T>(r: YamlReader, n: Node | null | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ItmError) r.fail(n, e.hint ? `${e.message}; ${e.hint}` : e.message);
    throw e;
  }
}

/**
 * Reads a node file: `file` names it in messages, `base` is where its relative paths start (a
 * module file, a `path` parameter; default: the file's directory). Throws an ItmError naming the
 * line of the first thing wrong.
 */
export async function readNode(text: string, file: string, base = dirname(resolve(file))): Promise<NodeState> {
  const r: YamlReader = new YamlReader(text, file, '');
  if (r.root === null) r.fail(null, "the file is empty (a node with nothing set up is 'devices: {}')");
  const top = r.map(r.root, ['devices'], 'the node', 'devices');
  const devs = top.pairs.get('devices')?.value as Node | undefined;
  if (!devs || (isScalar(devs) && devs.value === null)) return { devices: [] };
  if (!isMap(devs)) r.fail(devs, "'devices' is a mapping of device names to what each has");
  const out: DeviceState[] = [];
  const seen = new Map<string, string>();
  for (const p of devs.items) {
    const dev = isScalar(p.key) ? String(p.key.value) : '';
    const keyNode = p.key as Node;
    at(r, keyNode, () => {
      resolveDevice(dev, 'manage');
      requireEthernet(dev);
    });
    out.push(await readDevice(r, dev, keyNode, p.value as Node | null, base, seen));
  }
  checkNodeMaps(out);
  return { devices: out };
}

async function readDevice(
  r: YamlReader,
  dev: string,
  keyNode: Node,
  v: Node | null,
  base: string,
  seen: Map<string, string>,
): Promise<DeviceState> {
  const d: DeviceState = { dev, hooks: [], instances: [], at: r.at(keyNode) };
  if (v === null || (isScalar(v) && v.value === null)) return d;
  const f = r.map(v, ['hooks', 'modules'], `device ${dev}`, 'hooks, modules');
  const hooks = new Set<Hook>();
  const h = f.pairs.get('hooks')?.value as Node | undefined;
  if (h && !(isScalar(h) && h.value === null)) {
    for (const n of isSeq(h) ? (h.items as Node[]) : [h]) {
      const name = isScalar(n) ? String(n.value) : '';
      if (!(HOOKS as readonly string[]).includes(name)) r.fail(n, `unknown hook '${name}' (hooks: ${HOOKS.join(', ')})`);
      hooks.add(name as Hook);
    }
  }
  for (const e of r.seq(f, 'modules', 'modules')?.items ?? []) {
    for (const inst of await readEntry(r, dev, e as Node, base)) {
      const k = instanceKey(inst);
      const earlier = seen.get(k);
      if (earlier)
        r.fail(e as Node, `${dev} ${inst.hook} already has an instance named ${inst.name} (${earlier}): give this one another name`);
      seen.set(k, inst.at!);
      d.instances.push(inst);
      hooks.add(inst.hook);
    }
  }
  d.hooks = HOOKS.filter((x) => hooks.has(x));
  for (const hook of d.hooks) {
    const n = d.instances.filter((i) => i.hook === hook).length;
    if (n > abi.ITM_MAX_SLOTS) r.fail(keyNode, `${dev} ${hook}: ${n} modules, more than the ${abi.ITM_MAX_SLOTS} one hook can chain`);
  }
  return d;
}

/** One entry of a device's modules: an instance, or one per hook of the module's hook set. */
async function readEntry(r: YamlReader, dev: string, n: Node, base: string): Promise<Instance[]> {
  const f = r.map(n, ENTRY_KEYS, 'a module entry', ENTRY_SHAPE);
  const where = r.at(n);
  const { v: given, node: specNode } = r.str(f, 'module');
  const spec = isModuleFile(given) ? resolve(base, given) : given;
  const { def } = await atAsync(r, specNode, () => resolveModule(spec));
  let name = def.name;
  if (f.pairs.has('name')) {
    const s = r.str(f, 'name');
    name = s.v;
    at(r, s.node, () => checkInstanceName(name));
  }
  let hooks: readonly Hook[];
  if (f.pairs.has('hook')) {
    const s = r.str(f, 'hook');
    if (!(HOOKS as readonly string[]).includes(s.v)) r.fail(s.node, `unknown hook '${s.v}' (hooks: ${HOOKS.join(', ')})`);
    if (!def.hooks.includes(s.v as Hook)) r.fail(s.node, `${def.name} cannot run at ${s.v} (its hooks: ${def.hooks.join(', ')})`);
    hooks = [s.v as Hook];
  } else hooks = def.kernel?.hookSet ?? [def.hooks[def.hooks.length - 1]!];
  let priority = DEFAULT_PRIORITY;
  if (f.pairs.has('priority')) {
    const s = r.scalar(f, 'priority');
    priority = at(r, s.node, () => {
      checkPriority(s.v as number, s.v);
      return s.v as number;
    });
  }
  const interest = readInterest(r, f);
  const params = readParams(r, f, def, base, n);
  // the module's own checks of its parameters' combinations, as a load makes them
  at(r, (f.pairs.get('params')?.value as Node) ?? n, () => kernelConfig(def, params));
  return hooks.map((hook) => {
    const it = at(r, interest.node ?? n, () => {
      const x = interestAt(def, params, hook, interest.given);
      resolveInterestDevices(x, dev, hook, resolveDevice(dev, 'manage'));
      return x;
    });
    return {
      dev,
      hook,
      name,
      module: def.name,
      spec,
      priority,
      params,
      interest: formatInterest(it),
      ...(interest.given ? { given: interest.given } : {}),
      at: where,
      def,
    };
  });
}

function readInterest(r: YamlReader, f: Fields): { given?: string[]; node?: Node } {
  const v = f.pairs.get('interest')?.value as Node | undefined;
  if (v === undefined || (isScalar(v) && v.value === null)) return {};
  const items = isSeq(v) ? (v.items as Node[]) : [v];
  const given = items.map((n) => {
    if (!isScalar(n) || (typeof n.value !== 'string' && typeof n.value !== 'number'))
      r.fail(n, "'interest' is key=value text (proto=udp,dport=5001), or a list of it");
    return String(n.value);
  });
  // `all` (what export writes for every packet) is no key=value: it is the empty interest
  return { given: given.length === 1 && given[0] === 'all' ? [] : given, node: v };
}

function readParams(r: YamlReader, f: Fields, def: ModuleDef, base: string, entry: Node): Record<string, ParamValue> {
  const v = f.pairs.get('params')?.value as Node | undefined;
  const raw: Record<string, unknown> = {};
  if (v !== undefined && !(isScalar(v) && v.value === null)) {
    if (!isMap(v)) r.fail(v, "'params' is a mapping of the module's parameters to their values");
    for (const p of v.items) {
      const k = isScalar(p.key) ? String(p.key.value) : '';
      at(r, p.key as Node, () => checkParamName(def, k, 'key'));
      const val = p.value as Node | null;
      if (!isScalar(val) || val.value === null) r.fail(val ?? (p.key as Node), `${def.name}: parameter ${k} needs a single value`);
      let x = val.value;
      // a path is relative to the file, as a module file is
      if (def.params[k]!.type === 'path' && typeof x === 'string' && x !== '') x = resolve(base, x);
      raw[k] = at(r, val, () => checkParamValue(def, k, x, 'key'));
    }
  }
  return at(r, v ?? entry, () => validateParams(def, raw, 'key'));
}

/** Instances of one name that share a node's maps (route) take the same parameters everywhere. */
function checkNodeMaps(devs: DeviceState[]): void {
  const first = new Map<string, Instance>();
  for (const i of devs.flatMap((d) => d.instances)) {
    if (!i.def?.kernel?.nodeMaps?.(i.params).length) continue;
    const f = first.get(i.name);
    if (!f) {
      first.set(i.name, i);
      continue;
    }
    if (f.module !== i.module || JSON.stringify(f.params) !== JSON.stringify(i.params)) {
      throw new ItmError(
        `${i.at}: ${i.name} is also at ${f.dev} ${f.hook} (${f.at}) with another module or other parameters: its instances on this node share their maps, so they take the same ones (or give this one another name)`,
      );
    }
  }
}
