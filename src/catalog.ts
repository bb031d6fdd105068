// The modules itm ships: each folder under modules/ with a module.ts declaration.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ItmError } from './errors.js';
import type { ModuleDef } from './module-def.js';

const here = dirname(fileURLToPath(import.meta.url));
/** the repository root (this file runs from dist/src) */
export const ROOT = resolve(here, '..', '..');
export const MODULES_DIST = join(ROOT, 'dist', 'modules');
export const BPF_BUILD = join(ROOT, 'bpf', 'build');

export function moduleNames(): string[] {
  if (!existsSync(MODULES_DIST)) return [];
  return readdirSync(MODULES_DIST, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(MODULES_DIST, d.name, 'module.js')))
    .map((d) => d.name)
    .sort();
}

export async function findModule(name: string): Promise<ModuleDef> {
  const names = moduleNames();
  if (!names.includes(name)) {
    throw new ItmError(`unknown module '${name}' (available: ${names.join(', ') || 'none — run npm run setup'})`);
  }
  const mod = (await import(pathToFileURL(join(MODULES_DIST, name, 'module.js')).href)) as { default: ModuleDef };
  return mod.default;
}

export function kernelObjectPath(def: ModuleDef): string {
  const p = join(BPF_BUILD, 'modules', def.kernel.object);
  if (!existsSync(p)) throw new ItmError(`${def.name}: its BPF object ${p} is missing — run npm run setup`);
  return p;
}

export function dispatcherObjectPath(): string {
  const p = join(BPF_BUILD, 'dispatcher.bpf.o');
  if (!existsSync(p)) throw new ItmError(`the dispatcher object ${p} is missing — run npm run setup`);
  return p;
}
