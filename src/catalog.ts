// The modules itm ships: each folder under modules/ with a module.ts declaration.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ItmError } from './errors.js';
import type { ModuleDef } from './module-def.js';

const here = dirname(fileURLToPath(import.meta.url));
/** the repository root (this file runs from dist/src) */
export const ROOT = resolve(here, '..', '..');
export const MODULES_DIST = join(ROOT, 'dist', 'modules');
export const BPF_BUILD = join(ROOT, 'bpf', 'build');

/**
 * Where modules are found: the shipped ones, then the directories of ITM_MODULE_PATH (colon
 * separated), each holding one folder per module with its compiled declaration, `module.js`.
 * The first folder of a name wins.
 */
function moduleDirs(): Map<string, string> {
  const roots = [MODULES_DIST, ...(process.env.ITM_MODULE_PATH ?? '').split(':').filter(Boolean).map((d) => resolve(d))];
  const found = new Map<string, string>();
  for (const root of roots) {
    if (!existsSync(root)) continue;
    for (const d of readdirSync(root, { withFileTypes: true })) {
      if (d.isDirectory() && !found.has(d.name) && existsSync(join(root, d.name, 'module.js'))) found.set(d.name, join(root, d.name));
    }
  }
  return found;
}

export function moduleNames(): string[] {
  return [...moduleDirs().keys()].sort();
}

export async function findModule(name: string): Promise<ModuleDef> {
  const dirs = moduleDirs();
  const dir = dirs.get(name);
  if (!dir) {
    throw new ItmError(`unknown module '${name}' (available: ${[...dirs.keys()].sort().join(', ') || 'none — run npm run setup'})`);
  }
  const mod = (await import(pathToFileURL(join(dir, 'module.js')).href)) as { default?: ModuleDef };
  if (!mod.default?.name || mod.default.name !== name || !mod.default.kernel) {
    throw new ItmError(`${join(dir, 'module.js')} does not declare module '${name}' (export default defineModule({ name: '${name}', ... }))`);
  }
  return mod.default;
}

/** A module's object: an absolute path, or one relative to bpf/build/modules (the shipped ones). */
export function kernelObjectPath(def: ModuleDef): string {
  const p = isAbsolute(def.kernel.object) ? def.kernel.object : join(BPF_BUILD, 'modules', def.kernel.object);
  if (!existsSync(p)) throw new ItmError(`${def.name}: its BPF object ${p} is missing — run npm run setup`);
  return p;
}

export function dispatcherObjectPath(): string {
  const p = join(BPF_BUILD, 'dispatcher.bpf.o');
  if (!existsSync(p)) throw new ItmError(`the dispatcher object ${p} is missing — run npm run setup`);
  return p;
}
