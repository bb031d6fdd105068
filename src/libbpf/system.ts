import { mkdirSync } from 'node:fs';
import { native } from './native.js';

/** True if `path` is on a bpf filesystem; false if it does not exist or is on another fs. */
export function isBpffs(path: string): boolean {
  return native.isBpffs(path);
}

/** Creates `path` (with parents) and mounts a private (mode 0700) bpffs on it. */
export function mountBpffs(path: string): void {
  mkdirSync(path, { recursive: true });
  native.mountBpffs(path);
}

/** The CPU count per-CPU maps are sized by (possible, not online, CPUs). */
export function numPossibleCpus(): number {
  return native.numPossibleCpus();
}
