// How a module is declared, once: name, hooks, parameters, kernel object. The CLI's options and
// the registry's validation both come from this declaration.
import { ItmError } from './errors.js';
import { parseDscp } from './dscp.js';
import type { BpfMap } from './libbpf/index.js';

export const HOOKS = ['tc-ingress', 'tc-egress'] as const;
export type Hook = (typeof HOOKS)[number];

export type ParamValue = string | number | boolean;
export interface ParamSpec {
  type: 'dscp' | 'int' | 'number' | 'string' | 'bool';
  describe: string;
  required?: boolean;
  default?: ParamValue;
  min?: number;
  max?: number;
  /** the BPF global (`const volatile`) this parameter sets, when it maps one to one */
  global?: string;
}

export interface KernelConfig {
  /** values for BPF globals, by C name: numbers are written in the global's own size */
  globals?: Record<string, number | bigint | Buffer>;
  /** map sizes, by map name */
  maxEntries?: Record<string, number>;
}

export interface ModuleDef {
  name: string;
  description: string;
  hooks: readonly Hook[];
  /** the module's object (relative to bpf/build/modules, or absolute) and its entry program
   * (default `itm_module_<name>`, the one ITM_MODULE(<name>, ...) defines) */
  kernel: { object: string; program?: string };
  params: Record<string, ParamSpec>;
  /** turns validated parameters into the kernel configuration; by default each parameter with a
   * `global` sets that global */
  configure?: (params: Record<string, ParamValue>) => KernelConfig;
  /** itmBench's class-update and controller-update: run every `intervalMs` by whatever hosts the
   * module's periodic functions (for now `itmctl watch`) */
  every?: {
    intervalMs: number;
    /** publishes per-class figures */
    classUpdate?: (ctx: PeriodicContext) => Record<string, number | string>;
    /** adjusts the module's parameters in its maps; says what it changed, if anything */
    controllerUpdate?: (ctx: PeriodicContext) => string | undefined;
  };
  /** maps that an instance shares with the instance of the same name on the device's other hook
   * (qos --bidir: one flow table for both directions) */
  sharedMaps?: (params: Record<string, ParamValue>) => string[];
  /** the module's per-flow state, for `itmctl flows`: rows from its pinned maps, largest first */
  flows?: (open: (map: string) => BpfMap, params: Record<string, ParamValue>) => FlowRow[];
}

export interface PeriodicContext {
  /** one of the instance's pinned maps (opened once, kept across periods) */
  open: (map: string) => BpfMap;
  params: Record<string, ParamValue>;
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

export function defineModule(def: ModuleDef): ModuleDef {
  if (!/^[a-z][a-z0-9_-]{0,31}$/.test(def.name)) throw new Error(`module name '${def.name}' must be [a-z][a-z0-9_-]*`);
  return def;
}

function checkParam(mod: string, name: string, spec: ParamSpec, raw: unknown): ParamValue {
  const bad = (why: string) => new ItmError(`${mod}: invalid --${name} '${String(raw)}': ${why}`);
  switch (spec.type) {
    case 'dscp':
      return parseDscp(raw as string | number, `--${name}`);
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
  }
}

/** Validates parameters against the declaration; unknown and missing ones are errors. */
export function validateParams(def: ModuleDef, given: Record<string, unknown>): Record<string, ParamValue> {
  const out: Record<string, ParamValue> = {};
  for (const k of Object.keys(given)) {
    if (given[k] !== undefined && !(k in def.params)) {
      const known = Object.keys(def.params).map((p) => `--${p}`).join(', ') || 'none';
      throw new ItmError(`${def.name}: unknown parameter --${k} (its parameters: ${known})`);
    }
  }
  for (const [k, spec] of Object.entries(def.params)) {
    const raw = given[k] ?? spec.default;
    if (raw === undefined) {
      if (spec.required) throw new ItmError(`${def.name}: --${k} is required (${spec.describe})`);
      continue;
    }
    out[k] = checkParam(def.name, k, spec, raw);
  }
  return out;
}

export function kernelConfig(def: ModuleDef, params: Record<string, ParamValue>): KernelConfig {
  if (def.configure) return def.configure(params);
  const globals: Record<string, number | bigint | Buffer> = {};
  for (const [k, spec] of Object.entries(def.params)) {
    const v = params[k];
    if (spec.global && v !== undefined) globals[spec.global] = typeof v === 'boolean' ? Number(v) : typeof v === 'string' ? Buffer.from(v) : v;
  }
  return { globals };
}
