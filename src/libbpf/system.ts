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

/**
 * Takes an exclusive flock(2) on `path` (created if missing), waiting up to `timeoutMs`. Returns the
 * fd that holds it: close it to release. The kernel releases it if the process dies.
 */
export function lockFile(path: string, timeoutMs: number): number {
  return native.lockFile(path, timeoutMs);
}

/** The calling thread's network-namespace cookie (SO_NETNS_COOKIE): never reused while the system runs. */
export function netnsCookie(): bigint {
  return native.netnsCookie();
}

/** Releases a lock taken with lockFile. */
export function unlockFile(fd: number): void {
  native.closeFd(fd);
}
