// How a module is declared, once: name, hooks, parameters, kernel object. The CLI's options and
// the registry's validation both come from this declaration.
import { ItmError } from './errors.js';
import { parseDscp } from './dscp.js';
import type { BpfMap } from './libbpf/index.js';
import type { PacketView } from './user/packet.js';

/** The hooks, in the order a received packet meets them (xdp, then tc-ingress); tc-egress is on the
 * way out. */
export const HOOKS = ['xdp', 'tc-ingress', 'tc-egress'] as const;
export type Hook = (typeof HOOKS)[number];
/** what `itmctl up` sets up unless asked for a hook: xdp takes over the device's XDP slot, so it
 * is set up only when asked for (or when a module is loaded there) */
export const DEFAULT_HOOKS: readonly Hook[] = ['tc-ingress', 'tc-egress'];
/** the hooks where a packet is on its way in */
export const isIngress = (hook: Hook): boolean => hook !== 'tc-egress';

export type ParamValue = string | number | boolean;
export interface ParamSpec {
  /** `path`: a file's absolute path (itmctl resolves a relative one against its own directory) */
  type: 'dscp' | 'int' | 'number' | 'string' | 'bool' | 'path';
  describe: string;
  required?: boolean;
  default?: ParamValue;
  min?: number;
  max?: number;
  /** the BPF global (`const volatile`) this parameter sets, when it maps one to one */
  global?: string;
  /**
   * A running instance of a kernel module can take a new value in place (`itmctl apply`): the
   * globals `configure` makes of it are in a writable section (.data or .bss, not `const
   * volatile`), or what it says lives in maps that the module's `reconfigure` rewrites, and
   * nothing else of the instance (map sizes, shared maps, hooks) depends on it. The registry
   * rewrites those globals, runs `reconfigure`, and writes the record; itmd restarts the
   * instance's periodic functions with the new parameters. A change of any other parameter (or
   * one the module's `whyReload` refuses) reloads the instance.
   */
  live?: boolean;
}

export interface KernelConfig {
  /** values for BPF globals, by C name: numbers are written in the global's own size */
  globals?: Record<string, number | bigint | Buffer>;
  /** map sizes, by map name */
  maxEntries?: Record<string, number>;
}

/** What a user-space module's `process` returns: the packet goes on (as the module left it), or
 * is dropped. Returning nothing means accept. */
export type Verdict = 'accept' | 'drop';

/** What a user-space module's functions get besides the packet. */
export interface UserContext {
  /** the instance's name, its device and hook */
  name: string;
  dev: string;
  hook: Hook;
  /** what identifies this load of the instance: the same when the agent restarts its host, new
   * at every itmctl load (a file the module writes can tell the two apart) */
  load: string;
  params: Record<string, ParamValue>;
  /** what the functions keep from one packet (and period) to the next */
  state: Record<string, unknown>;
  /** the user data path of a kernel module (KernelSide.userDatapath): one of the instance's pinned
   * maps, opened once; absent for a module that has no object */
  open?: (map: string) => BpfMap;
}

/**
 * The functions of a user-space module (itmBench's libitm): run by the module's host process in
 * itmd, on packets that reach it over AF_XDP, in batches. A packet is a PacketView on the frame
 * itself: rewrite it in place (setDscp, or bytes of `data` with `modified = true`), and the host
 * recomputes the checksums before it goes back. An exception from classify or process lets the
 * packet go on unchanged (counted, logged at most once a second).
 */
export interface UserFunctions {
  /** a class for the packet; 0 skips process (default: 1 for every packet) */
  classify?: (pkt: PacketView, ctx: UserContext) => number;
  /** sees every packet with its class, 0 included; cannot drop or change it */
  log?: (pkt: PacketView, cls: number, ctx: UserContext) => void;
  process?: (pkt: PacketView, cls: number, ctx: UserContext) => Verdict | void;
  /** before the first packet (open files, say); a throw fails the load */
  start?: (ctx: UserContext) => void | Promise<void>;
  /** after the last packet, at unload (flush files) */
  stop?: (ctx: UserContext) => void | Promise<void>;
}

/** What every module declares, whichever its kind. */
interface ModuleBase {
  name: string;
  description?: string;
  hooks: readonly Hook[];
  params: Record<string, ParamSpec>;
  /** the interest used when `itmctl load` gives none (default: every packet) */
  interest?: string;
  /** the interest at `hook`, from the parameters and what `--interest` gave (instead of
   * `interest`) */
  interestFor?: (params: Record<string, ParamValue>, hook: Hook, given: string[] | undefined) => string | string[];
  /** itmBench's class-update and controller-update, run every `intervalMs`: by itmd for a kernel
   * module (or by `itmctl watch`), and in its own host process for a user module, where they see
   * the `state` of its per-packet functions */
  periodic?: Periodic;
}

/** A module whose per-packet functions are eBPF C (an ITM_MODULE in its object). */
export interface KernelModuleDef extends ModuleBase {
  kernel: KernelSide;
}

/** A module whose per-packet functions are TypeScript, run on packets that reach it over AF_XDP. */
export interface UserModuleDef extends ModuleBase, UserFunctions {
  kernel?: undefined;
  /** What cannot reach it (its host not serving, 1024 packets in flight, too long for a frame) is
   * dropped and counted instead of going past it: fail closed, where user modules otherwise fail
   * open. */
  failClosed?: boolean;
}

/** A module is one of two kinds, told apart by `kernel`. */
export type ModuleDef = KernelModuleDef | UserModuleDef;

/** What only a kernel module has: its object and what is done with it. */
export interface KernelSide {
  /** its object (relative to bpf/build/modules, or absolute) */
  object: string;
  /** turns validated parameters into the object's configuration (and checks their combinations);
   * by default each parameter with a `global` sets that global */
  configure?: (params: Record<string, ParamValue>) => KernelConfig;
  /** fills its maps after the object is loaded and before any packet reaches it (a throw fails
   * the load, which is undone) */
  init?: (ctx: InitContext) => void;
  /** given live parameters (ParamSpec.live) while it runs, after its globals: brings its maps in
   * line with them (`ctx.params` are the new ones, `from` the old); a throw refuses the change,
   * which is undone */
  reconfigure?: (ctx: InitContext, from: Record<string, ParamValue>) => void;
  /** why a change of live parameters cannot be made in place after all (route: its topology names
   * another node), or undefined */
  whyReload?: (from: Record<string, ParamValue>, to: Record<string, ParamValue>) => string | undefined;
  /**
   * Its per-packet functions must see each packet as it goes on the wire (route, which tags each
   * one): a GSO super-packet in its interest is cut into its segments first, and the module sees
   * every segment (struct itm_seg in bpf/include/itm/abi.h). Other modules see a super-packet once,
   * with its segment count in `pkt->segs`. User-space modules always get segments.
   */
  perSegment?: boolean;
  /** one `itmctl load` (without --hook) puts the module at each of these hooks, as instances of
   * one name that share its `sharedMaps`; one `unload` takes them all */
  hookSet?: readonly Hook[];
  /** maps that an instance shares with the instance of the same name on the device's other hook
   * (qos --bidir: one flow table for both directions) */
  sharedMaps?: (params: Record<string, ParamValue>) => string[];
  /** maps that every instance of the same name in the network namespace shares, on any device
   * and hook (route: one overlay node, whatever devices it is loaded on). Such instances must have
   * the same parameters. */
  nodeMaps?: (params: Record<string, ParamValue>) => string[];
  /** its per-flow state, for `itmctl flows`: rows from its pinned maps */
  flows?: (open: (map: string) => BpfMap, params: Record<string, ParamValue>) => FlowRow[];
  /** its per-packet work in TypeScript instead, chosen per load (route --datapath user) */
  userDatapath?: UserDatapath;
}

/**
 * A kernel module's per-packet work in TypeScript, for the loads `when` chooses. Such a load still
 * loads the object, for its maps (init, nodeMaps and the periodic functions work as for the
 * kernel data path, and the functions here get them by ctx.open), but its program stays out of
 * the chain: the packets in its interest go over AF_XDP to its host, as a user-space module's do.
 */
export interface UserDatapath extends UserFunctions {
  when: (params: Record<string, ParamValue>) => boolean;
  /** as UserModuleDef.failClosed (route: a packet past it would leave unencapsulated) */
  failClosed?: boolean;
}

export interface Periodic {
  intervalMs: number;
  /** publishes per-class figures */
  classUpdate?: (ctx: PeriodicContext) => Record<string, number | string>;
  /** adjusts the module's parameters in its maps; says what it changed, if anything */
  controllerUpdate?: (ctx: PeriodicContext) => string | undefined;
  /** when the instance goes (unload, agent stop): the last call with its context, before its
   * maps are closed */
  stop?: (ctx: PeriodicContext) => void;
  /** the periodic functions are the module's control plane, which it does not work without:
   * `itmctl load` starts itmd if it is not running */
  essential?: boolean;
}

/** What a kernel module's init gets: the instance and its freshly pinned maps (its globals are
 * set by configure, before the object loads). */
export interface InitContext {
  /** the instance: its name, device and hook */
  name: string;
  dev: string;
  hook: Hook;
  /** one of the instance's pinned maps (opened once, kept across periods) */
  open: (map: string) => BpfMap;
  params: Record<string, ParamValue>;
}

/** What the periodic functions get: the init's context, the running instance's globals, and the
 * state they keep. */
export interface PeriodicContext extends InitContext {
  /** a module global (in .bss or .data) of the running instance, read and written in place */
  global: (name: string) => { read(): Buffer; write(value: Buffer): void };
  /** what the functions keep from one period to the next */
  state: Record<string, unknown>;
}

export interface FlowRow {
  proto: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** the size the module ranks flows by */
  size: number;
  [column: string]: string | number;
}

export function isUserModule(def: ModuleDef): def is UserModuleDef {
  return def.kernel === undefined;
}

/** What runs in a host in user space for a load with these parameters: a user-space module's
 * functions, or a kernel module's user data path when the load chooses it; undefined when the
 * load's packets stay in the kernel. */
export function hostFunctions(def: ModuleDef, params: Record<string, ParamValue>): (UserFunctions & { failClosed?: boolean }) | undefined {
  if (isUserModule(def)) return def;
  const u = def.kernel.userDatapath;
  return u?.when(params) ? u : undefined;
}

const PER_PACKET = ['classify', 'log', 'process'] as const;
const isFn = (f: unknown) => typeof f === 'function';

/** Checks a declaration (a module file may be plain JavaScript); the message says what is wrong. */
export function checkDefinition(def: unknown): string | undefined {
  if (typeof def !== 'object' || def === null) return 'it exports no module declaration (export default defineModule({ ... }))';
  const d = def as Record<string, unknown> & Partial<ModuleBase>;
  if (typeof d.name !== 'string' || !d.name) return 'the module has no name';
  if (!/^[a-z][a-z0-9_-]{0,31}$/.test(d.name)) return `module name '${d.name}' must be [a-z][a-z0-9_-]*, up to 32 characters`;
  if (!Array.isArray(d.hooks) || !d.hooks.length) return `${d.name}: it names no hooks (hooks: ['tc-egress'], say)`;
  for (const h of d.hooks)
    if (!(HOOKS as readonly string[]).includes(h)) return `${d.name}: it cannot run at '${String(h)}' (hooks: ${HOOKS.join(', ')})`;
  if (d.params !== undefined && (typeof d.params !== 'object' || d.params === null)) return `${d.name}: params must be an object`;
  if (d.periodic !== undefined && typeof d.periodic?.intervalMs !== 'number') return `${d.name}: periodic needs an intervalMs`;
  const k = d.kernel as Partial<KernelSide> | undefined;
  if (k !== undefined) {
    if (typeof k !== 'object' || typeof k.object !== 'string') return `${d.name}: kernel.object must name its BPF object`;
    if (PER_PACKET.some((f) => d[f] !== undefined)) {
      return `${d.name}: a kernel module's per-packet functions are in its C object (TypeScript ones for a user data path go in kernel.userDatapath)`;
    }
    const u = k.userDatapath;
    if (u !== undefined) {
      if (!isFn(u.when)) return `${d.name}: kernel.userDatapath.when must be a function of the parameters`;
      if (!PER_PACKET.some((f) => isFn(u[f]))) return `${d.name}: kernel.userDatapath needs at least one of classify, log, process`;
    }
    return undefined;
  }
  for (const f of [...PER_PACKET, 'start', 'stop'] as const) {
    if (d[f] !== undefined && !isFn(d[f])) return `${d.name}: ${f} must be a function`;
  }
  if (!PER_PACKET.some((f) => d[f]))
    return `${d.name}: a user-space module needs at least one of classify, log, process (or a kernel object)`;
  return undefined;
}

/** A module's declaration, checked: by the type checker (a field of the other kind is an error)
 * and at run time. */
export function defineModule(def: ModuleDef): ModuleDef {
  const bad = checkDefinition(def);
  if (bad) throw new Error(bad);
  return def;
}

/** how parameters are named in messages: as itmctl's options (`--threshold`), or as the keys of a
 * node file's `params` (`threshold`) */
export type ParamStyle = 'option' | 'key';
const flag = (k: string, style: ParamStyle) => (style === 'option' ? `--${k}` : k);

function checkParam(mod: string, name: string, spec: ParamSpec, raw: unknown, style: ParamStyle): ParamValue {
  const bad = (why: string) => new ItmError(`${mod}: invalid ${flag(name, style)} '${String(raw)}': ${why}`);
  switch (spec.type) {
    case 'dscp':
      return parseDscp(raw as string | number, flag(name, style));
    case 'int': {
      const n = typeof raw === 'number' ? raw : /^-?\d+$/.test(String(raw).trim()) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) throw bad('not an integer');
      if (spec.min !== undefined && n < spec.min) throw bad(`must be at least ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) throw bad(`must be at most ${spec.max}`);
      return n;
    }
    case 'number': {
      const n = typeof raw === 'number' ? raw : /^-?(\d+\.?\d*|\.\d+)$/.test(String(raw).trim()) ? Number(raw) : NaN;
      if (!Number.isFinite(n)) throw bad('not a number');
      if (spec.min !== undefined && n < spec.min) throw bad(`must be at least ${spec.min}`);
      if (spec.max !== undefined && n > spec.max) throw bad(`must be at most ${spec.max}`);
      return n;
    }
    case 'bool':
      if (typeof raw === 'boolean') return raw;
      if (raw === 'true' || raw === 'false') return raw === 'true';
      throw bad('use true or false');
    case 'string':
      return String(raw);
    case 'path': {
      // relative to what? itmctl's directory, which the agent that validates it does not know
      const p = String(raw);
      if (!p.startsWith('/')) throw bad('give an absolute path (itmctl makes a relative one absolute)');
      return p;
    }
  }
}

/** Refuses a parameter the declaration does not have. */
export function checkParamName(def: ModuleDef, k: string, style: ParamStyle = 'option'): void {
  if (Object.hasOwn(def.params, k)) return;
  const known =
    Object.keys(def.params)
      .map((p) => flag(p, style))
      .join(', ') || 'none';
  throw new ItmError(`${def.name}: unknown parameter ${style === 'option' ? `--${k}` : `"${k}"`} (its parameters: ${known})`);
}

/** One parameter's value, checked against its declaration. */
export function checkParamValue(def: ModuleDef, k: string, raw: unknown, style: ParamStyle = 'option'): ParamValue {
  checkParamName(def, k, style);
  return checkParam(def.name, k, def.params[k]!, raw, style);
}

/** Validates parameters against the declaration; unknown and missing ones are errors. */
export function validateParams(def: ModuleDef, given: Record<string, unknown>, style: ParamStyle = 'option'): Record<string, ParamValue> {
  const out: Record<string, ParamValue> = {};
  for (const k of Object.keys(given)) if (given[k] !== undefined) checkParamName(def, k, style);
  for (const [k, spec] of Object.entries(def.params)) {
    const raw = given[k] ?? spec.default;
    if (raw === undefined) {
      if (spec.required)
        throw new ItmError(`${def.name}: ${style === 'option' ? `--${k}` : `parameter ${k}`} is required (${spec.describe})`);
      continue;
    }
    out[k] = checkParam(def.name, k, spec, raw, style);
  }
  return out;
}

export function kernelConfig(def: ModuleDef, params: Record<string, ParamValue>): KernelConfig {
  if (def.kernel?.configure) return def.kernel.configure(params);
  const globals: Record<string, number | bigint | Buffer> = {};
  for (const [k, spec] of Object.entries(def.params)) {
    const v = params[k];
    if (spec.global && v !== undefined)
      globals[spec.global] = typeof v === 'boolean' ? Number(v) : typeof v === 'string' ? Buffer.from(v) : v;
  }
  return { globals };
}

/** The parameters whose values differ between two sets (a missing one differs from any value). */
export function changedParams(a: Record<string, ParamValue>, b: Record<string, ParamValue>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => a[k] !== b[k]).sort();
}

/** Why a running instance with parameters `from` cannot take `to` in place (ParamSpec.live), or
 * undefined when it can: a change of any other parameter reloads it. */
export function whyReload(def: ModuleDef, from: Record<string, ParamValue>, to: Record<string, ParamValue>): string | undefined {
  const changed = changedParams(from, to);
  if (!changed.length) return undefined;
  const fixed = changed.filter((k) => def.params[k]?.live !== true);
  if (fixed.length) return `${fixed.join(', ')} cannot change while it runs`;
  if (!def.kernel) return `${def.name} runs in user space`;
  if (hostFunctions(def, from) || hostFunctions(def, to)) return 'its data path is in user space';
  let a: KernelConfig;
  let b: KernelConfig;
  try {
    a = kernelConfig(def, from);
    b = kernelConfig(def, to);
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
  if (JSON.stringify(a.maxEntries ?? {}) !== JSON.stringify(b.maxEntries ?? {})) return 'its map sizes change';
  const shared = (p: Record<string, ParamValue>) => JSON.stringify([def.kernel!.sharedMaps?.(p) ?? [], def.kernel!.nodeMaps?.(p) ?? []]);
  if (shared(from) !== shared(to)) return 'the maps it shares change';
  return def.kernel.whyReload?.(from, to);
}

/** The parameters whose values are not their defaults: what a person gave. */
export function nonDefaultParams(def: ModuleDef, params: Record<string, ParamValue>): Record<string, ParamValue> {
  const out: Record<string, ParamValue> = {};
  for (const [k, v] of Object.entries(params)) {
    const spec = def.params[k];
    if (spec?.default !== undefined) {
      try {
        if (checkParam(def.name, k, spec, spec.default, 'key') === v) continue;
      } catch {
        /* a default that does not validate: say the value */
      }
    }
    out[k] = v;
  }
  return out;
}
