// yargs as itmctl starts it: yargs's own factory with the platform shim it ships for ESM
// (node_modules/yargs/lib/platform-shims/esm.mjs) rebuilt here, the same in everything but one:
// what lays out the help (cliui, string-width, wrap-ansi and theirs) is loaded when help is
// rendered, not on import. Those imports are about 35 ms of an itmctl run, a command that asks
// for no help renders none (itmctl.ts), and `import('yargs')` would load them all.
//
// This leans on two things of yargs that its exports do not name: the factory's file
// (build/lib/yargs-factory.js) and the shim's shape. test/units.test.ts holds the shim here to the
// installed yargs's, key by key; if the factory is not where it was, itmctl takes the plain
// `import('yargs')`.
import { notStrictEqual, strictEqual } from 'node:assert';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { inspect } from 'node:util';
import type { Argv } from 'yargs';

type Yargs = (args?: readonly string[], cwd?: string) => Argv;

const YARGS_DIR = dirname(createRequire(import.meta.url).resolve('yargs/package.json'));
/** the file of yargs's own ESM shim: what its paths and its `require` are relative to */
export const YARGS_SHIM_FILE = join(YARGS_DIR, 'lib', 'platform-shims', 'esm.mjs');

/** yargs's platform shim, with cliui and string-width required on first use (require of ES
 * modules: node >= 20.19, as package.json's engines say). */
export async function platformShim(): Promise<Record<string, unknown>> {
  const [{ default: escalade }, { default: Parser }, { default: y18n }, { default: getCallerFile }, { getProcessArgvBin }] =
    await Promise.all([
      import('escalade/sync'),
      import('yargs-parser'),
      import('y18n' as string) as Promise<{ default: (opts: { directory: string; updateFiles: boolean }) => unknown }>,
      import('get-caller-file'),
      import(pathToFileURL(join(YARGS_DIR, 'build', 'lib', 'utils', 'process-argv.js')).href) as Promise<{
        getProcessArgvBin: () => string;
      }>,
    ]);
  const require = createRequire(pathToFileURL(YARGS_SHIM_FILE));
  const mainFilename = YARGS_SHIM_FILE.substring(0, YARGS_SHIM_FILE.lastIndexOf('node_modules'));
  // an ES module's default export, as require gives it (cliui names its own: 'module.exports')
  const esm = <T>(id: string): T => {
    const m = require(id) as T | { default: T };
    return typeof m === 'function' ? (m as T) : (m as { default: T }).default;
  };
  let cliui: ((opts: unknown) => unknown) | undefined;
  let stringWidth: ((s: string) => number) | undefined;
  return {
    assert: { notStrictEqual, strictEqual },
    cliui: (opts: unknown) => {
      cliui ??= esm<(opts: unknown) => unknown>('cliui');
      return cliui(opts);
    },
    findUp: escalade,
    getEnv: (key: string) => process.env[key],
    inspect,
    getProcessArgvBin,
    mainFilename: mainFilename || process.cwd(),
    Parser,
    path: { basename, dirname, extname, relative, resolve, join },
    process: {
      argv: () => process.argv,
      cwd: process.cwd,
      emitWarning: (warning: string, type: string) => process.emitWarning(warning, type),
      execPath: () => process.execPath,
      exit: (code: number) => {
        process.exit(code);
      },
      nextTick: process.nextTick,
      stdColumns: typeof process.stdout.columns !== 'undefined' ? process.stdout.columns : null,
    },
    readFileSync,
    readdirSync,
    require,
    getCallerFile: () => {
      const callerFile = (getCallerFile as (n: number) => string)(3);
      return /^file:\/\//.test(callerFile) ? fileURLToPath(callerFile) : callerFile;
    },
    stringWidth: (s: string) => {
      stringWidth ??= esm<(s: string) => number>('string-width');
      return stringWidth(s);
    },
    y18n: y18n({ directory: join(YARGS_DIR, 'locales'), updateFiles: false }),
  };
}

/** yargs's default export, built on the shim above; the plain one if its factory moved. */
export async function loadYargs(): Promise<Yargs> {
  let factory: { YargsFactory: (shim: unknown) => Yargs };
  try {
    factory = (await import(pathToFileURL(join(YARGS_DIR, 'build', 'lib', 'yargs-factory.js')).href)) as typeof factory;
  } catch {
    return (await import('yargs')).default as unknown as Yargs;
  }
  return factory.YargsFactory(await platformShim());
}

/** Keeps yargs from rendering a command's help after its handler starts (it keeps the text for
 * a help shown later, which itmctl never shows: its .fail prints the message alone); help asked
 * for is rendered as ever. Through yargs's internals: without them, nothing changes. */
export function skipHelpCache(y: Argv): void {
  const usage = (y as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: unknown } } })
    .getInternalMethods?.()
    .getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {};
}
