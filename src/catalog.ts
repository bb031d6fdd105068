// The modules itm ships: each folder under modules/ with a module.ts declaration.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { ItmError } from './errors.js';
import { checkDefinition, type Hook, type ModuleDef } from './module-def.js';

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
  const roots = [
    MODULES_DIST,
    ...(process.env.ITM_MODULE_PATH ?? '')
      .split(':')
      .filter(Boolean)
      .map((d) => resolve(d)),
  ];
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

/** The modules that bring their own itmctl commands: each folder with a compiled `cli.js` beside
 * its `module.js`, by module name. Finding them imports nothing: itmctl imports a module's cli.js
 * only for that module's command, or for help. */
export function moduleCliFiles(): Map<string, string> {
  const found = new Map<string, string>();
  for (const [name, dir] of moduleDirs()) {
    const file = join(dir, 'cli.js');
    if (existsSync(file)) found.set(name, file);
  }
  return found;
}

/** A module given as a file rather than a name: `./my-module.js`, `/abs/path.mjs`. */
export function isModuleFile(spec: string): boolean {
  return spec.includes('/') || /\.(m?js|ts)$/.test(spec);
}

async function importDefinition(file: string): Promise<ModuleDef> {
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (e) {
    throw new ItmError(`cannot load module file ${file}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  const bad = checkDefinition(mod.default);
  if (bad) throw new ItmError(`${file}: ${bad}`);
  return mod.default as ModuleDef;
}

/** A module by name (shipped, or in ITM_MODULE_PATH) or by file, with the file it comes from. */
export async function resolveModule(spec: string): Promise<{ def: ModuleDef; file: string }> {
  if (isModuleFile(spec)) {
    const file = resolve(spec);
    if (/\.ts$/.test(file)) throw new ItmError(`${spec}: compile it first (tsc), and load the .js file`);
    if (!existsSync(file)) throw new ItmError(`unknown module file ${spec}: no such file`);
    return { def: await importDefinition(file), file };
  }
  const dirs = moduleDirs();
  const dir = dirs.get(spec);
  if (!dir) {
    throw new ItmError(`unknown module '${spec}' (available: ${[...dirs.keys()].sort().join(', ') || 'none — run npm run setup'})`);
  }
  const file = join(dir, 'module.js');
  const def = await importDefinition(file);
  if (def.name !== spec)
    throw new ItmError(`${file} does not declare module '${spec}' (export default defineModule({ name: '${spec}', ... }))`);
  return { def, file };
}

export async function findModule(spec: string): Promise<ModuleDef> {
  return (await resolveModule(spec)).def;
}

/** A module's object: an absolute path, or one relative to bpf/build/modules (the shipped ones). */
/** A kernel module's object for a hook: the xdp build sits next to the tc one, as `<name>.xdp.bpf.o`. */
export function kernelObjectPath(def: ModuleDef, hook: Hook = 'tc-egress'): string {
  if (!def.kernel) throw new ItmError(`${def.name} is a user-space module: it has no BPF object`);
  let p = isAbsolute(def.kernel.object) ? def.kernel.object : join(BPF_BUILD, 'modules', def.kernel.object);
  if (hook === 'xdp') p = p.replace(/\.bpf\.o$/, '.xdp.bpf.o');
  if (!existsSync(p)) throw new ItmError(`${def.name}: its BPF object ${p} is missing — run npm run setup`);
  return p;
}

export function dispatcherObjectPath(hook: Hook = 'tc-egress'): string {
  const p = join(BPF_BUILD, hook === 'xdp' ? 'dispatcher.xdp.bpf.o' : 'dispatcher.bpf.o');
  if (!existsSync(p)) throw new ItmError(`the dispatcher object ${p} is missing — run npm run setup`);
  return p;
}
