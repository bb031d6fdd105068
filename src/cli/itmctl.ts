#!/usr/bin/env node
// itmctl: the command line of itm. One command per file under commands/; this file wires them
// and turns errors into one line a person can act on.
//
// It imports only what the command it runs needs: the commands' handlers import the registry,
// the control layer or the agent when they run, the module catalog is read only for load and
// help, and a module's own commands (its cli.js) only for that module's command line or help.
import yargs from 'yargs';
import { ItmError } from '../errors.js';
import { BpfError } from '../libbpf/errors.js';
import { log, setVerbose } from '../log.js';
import { upCommand } from './commands/up.js';
import { downCommand } from './commands/down.js';
import { loadCommand } from './commands/load.js';
import { unloadCommand } from './commands/unload.js';
import { reorderCommand } from './commands/reorder.js';
import { listCommand } from './commands/list.js';
import { explainCommand } from './commands/explain.js';
import { flowsCommand } from './commands/flows.js';
import { watchCommand } from './commands/watch.js';
import { agentCommand } from './commands/agent.js';
import { applyCommand } from './commands/apply.js';
import { diffCommand } from './commands/diff.js';
import { exportCommand } from './commands/export.js';
import { commandNames, type ModuleCommand } from './module-commands.js';

function fail(err: unknown, verbose: boolean): never {
  let msg: string;
  if (err instanceof ItmError) msg = err.hint ? `${err.message}; ${err.hint}` : err.message;
  else if (err instanceof BpfError) msg = err.message;
  else msg = err instanceof Error ? err.message : String(err);
  if (!(err instanceof ItmError) && !verbose) msg += ' (pass --verbose for the stack)';
  // one line: a verifier summary or a tool's message may span several
  process.stderr.write(`itmctl: ${msg.trim().replace(/\s*\n\s*/g, '; ')}\n`);
  const log = (err as { cause?: { log?: string } } | undefined)?.cause?.log;
  if (verbose && log) process.stderr.write(`${log}\n`);
  if (verbose && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(err instanceof ItmError ? 1 : 70);
}

const CORE = [
  upCommand,
  downCommand,
  unloadCommand,
  reorderCommand,
  listCommand,
  explainCommand,
  flowsCommand,
  watchCommand,
  agentCommand,
  applyCommand,
  diffCommand,
  exportCommand,
];
const CORE_NAMES = new Set(['load', ...CORE.flatMap(commandNames)]);

const argv = process.argv.slice(2);
const verbose = argv.includes('--verbose');
setVerbose(verbose);
try {
  const helps = argv.length === 0 || argv.some((a) => a === '--help' || a === '-h' || a === 'help');
  const word = argv.find((a) => !a.startsWith('-'));
  // the modules' declarations only where they are asked for: help (load's lists them all; a load
  // itself reads the one it loads); a module whose declaration does not load must not stop the
  // other commands: load says why
  const wantsDefs = helps;
  const catalog = wantsDefs || (word !== undefined && !CORE_NAMES.has(word)) ? await import('../catalog.js') : undefined;
  const defs =
    wantsDefs && catalog
      ? (await Promise.allSettled(catalog.moduleNames().map((n) => catalog.findModule(n)))).flatMap((r) =>
          r.status === 'fulfilled' ? [r.value] : [],
        )
      : [];
  // a module's own commands: those of the module the command line names (what goes wrong with
  // them is that command's error), or for help every module's that loads
  const moduleCmds: ModuleCommand[] = [];
  if (catalog) {
    const { moduleCommands } = await import('./module-commands.js');
    const files = [...catalog.moduleCliFiles()].filter(([name]) => !CORE_NAMES.has(name));
    const named = files.find(([name]) => name === word);
    if (named && !helps) moduleCmds.push(...(await moduleCommands(...named)));
    else if (helps) {
      for (const r of await Promise.allSettled(files.map((f) => moduleCommands(...f))))
        if (r.status === 'fulfilled') moduleCmds.push(...r.value);
    }
  }
  let y = yargs(argv)
    .scriptName('itmctl')
    .parserConfiguration({ 'camel-case-expansion': false })
    .option('json', { type: 'boolean', describe: 'machine-readable output' })
    .option('verbose', { type: 'boolean', describe: 'debug logs and stacks on stderr' })
    .command(upCommand)
    .command(downCommand)
    .command(loadCommand(defs))
    .command(unloadCommand)
    .command(reorderCommand)
    .command(listCommand)
    .command(explainCommand)
    .command(flowsCommand)
    .command(watchCommand)
    .command(agentCommand)
    .command(applyCommand)
    .command(diffCommand)
    .command(exportCommand);
  for (const c of moduleCmds) y = y.command(c);
  await y
    .demandCommand(1, 'give a command (itmctl --help lists them)')
    .strict()
    .fail((msg, err) => {
      if (err) throw err;
      // yargs spreads some messages over lines; a person reads one
      process.stderr.write(`itmctl: ${msg.trim().replace(/\s*\n\s*/g, ' ')}\n`);
      process.exit(2);
    })
    .help()
    .wrap(Math.min(120, process.stdout.columns || 100))
    .parseAsync();
} catch (e) {
  log.debug({ err: e }, 'command failed');
  fail(e, verbose);
}
