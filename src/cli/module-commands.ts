// The itmctl commands a module brings in its own folder (`modules/<name>/cli.ts`, compiled to
// cli.js beside module.js). Its default export is one yargs command or a list of them, each named
// after the module (`route paths` is route's): that name is how itmctl knows, before importing
// anything, whose cli.js a command line needs.
import { pathToFileURL } from 'node:url';
import type { CommandModule } from 'yargs';
import { ItmError } from '../errors.js';
import type { GlobalArgs } from './common.js';

// biome-ignore lint/suspicious/noExplicitAny: each module's command has arguments of its own type, and yargs's CommandModule is invariant in them
export type ModuleCommand = CommandModule<GlobalArgs, any>;

/** The first word of a command (`route <action>` → `route`) and of each alias. */
export function commandNames(c: Pick<CommandModule, 'command' | 'aliases'>): string[] {
  const cmds = [c.command ?? [], c.aliases ?? []].flat();
  return cmds.map((s) => String(s).trim().split(/\s+/)[0]!).filter((w) => w && w !== '$0');
}

/** Imports a module's cli.js and checks what it exports; any problem is an ItmError that names
 * the module and the file. */
export async function moduleCommands(module: string, file: string): Promise<ModuleCommand[]> {
  const what = `the commands of module ${module} (${file})`;
  let mod: { default?: unknown };
  try {
    mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
  } catch (e) {
    throw new ItmError(`cannot load ${what}: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}`);
  }
  const list = Array.isArray(mod.default) ? mod.default : mod.default === undefined ? [] : [mod.default];
  if (!list.length) throw new ItmError(`${what}: no command (export default a yargs command, or a list of them)`);
  for (const c of list as ModuleCommand[]) {
    if (!c || typeof c !== 'object' || typeof c.handler !== 'function' || (typeof c.command !== 'string' && !Array.isArray(c.command))) {
      throw new ItmError(`${what}: its default export must be yargs commands ({ command, describe, builder, handler })`);
    }
    const names = commandNames(c);
    if (!names.length || names.some((n) => n !== module)) {
      throw new ItmError(
        `${what}: command '${names.join(' ') || String(c.command)}' must be named after the module ('${module} <action>')`,
      );
    }
  }
  return list as ModuleCommand[];
}
