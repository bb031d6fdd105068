// A node's state as `itmctl apply`, `diff` and `export` see it: per device, the hooks set up and
// the module instances on them. The same shape holds what a node file asks for (document.ts) and
// what the node runs (current.ts), so that one plan (plan.ts) goes from the one to the other.
import type { Hook, ModuleDef, ParamValue } from '../module-def.js';

export interface Instance {
  dev: string;
  hook: Hook;
  /** the instance's name, unique on its hook */
  name: string;
  /** the module it is an instance of (its declaration's name) */
  module: string;
  /** how to load it: the module's name, or the file of a module found by file */
  spec: string;
  priority: number;
  /** validated, defaults included, as the record keeps them */
  params: Record<string, ParamValue>;
  /** the interest as the chain has it (formatInterest: `proto=udp,dport=5001`, or `all`) */
  interest: string;
  /** what a file gave as the interest (for load), undefined for the module's own */
  given?: string[];
  /** where a file asks for it (`node.yaml:12`), for messages */
  at?: string;
  /** its declaration, where the file's was read (a running instance has none here) */
  def?: ModuleDef;
}

export interface DeviceState {
  dev: string;
  /** the hooks set up (those with modules among them), in HOOKS order */
  hooks: Hook[];
  /** hooks set up whose dispatcher is not attached or whose record lost its pins: up repairs them */
  broken?: Hook[];
  /** a file's in its order; a node's per hook in chain order */
  instances: Instance[];
  /** where a file names the device */
  at?: string;
}

export interface NodeState {
  devices: DeviceState[];
}

export const instanceKey = (i: Pick<Instance, 'dev' | 'hook' | 'name'>): string => `${i.dev}/${i.hook}/${i.name}`;
