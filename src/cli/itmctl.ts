#!/usr/bin/env node
// itmctl: the command line of itm. One command per file under commands/; this file wires them
// and turns errors into one line a person can act on.
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { ItmError } from '../errors.js';
import { BpfError } from '../libbpf/errors.js';
import { log, setVerbose } from '../log.js';
import { findModule, moduleNames } from '../catalog.js';
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
import { routeCommand } from './commands/route.js';

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

const argv = hideBin(process.argv);
const verbose = argv.includes('--verbose');
setVerbose(verbose);
try {
  // the modules' declarations (their options) only where they are asked for: load, and help; a
  // module whose declaration does not load must not stop the other commands: load says why
  const wantsDefs = argv[0] === 'load' || argv.length === 0 || argv.some((a) => a === '--help' || a === '-h' || a === 'help');
  const defs = wantsDefs
    ? (await Promise.allSettled(moduleNames().map((n) => findModule(n)))).flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
    : [];
  await yargs(argv)
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
    .command(routeCommand)
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
