import { resolve } from 'node:path';
import type { CommandModule } from 'yargs';
import { ItmError } from '../../errors.js';
import { devOption, hookOption, printJson, requireRoot, type GlobalArgs } from '../common.js';
import type { ModuleDef } from '../../module-def.js';

interface Args extends GlobalArgs {
  module: string;
  name?: string;
  dev: string;
  hook?: string;
  priority?: number;
  interest?: string[];
}
const OWN = new Set(['_', '$0', 'module', 'name', 'dev', 'hook', 'priority', 'interest', 'json', 'verbose']);

/** `itmctl load --help` lists every module with the parameters from its declaration. */
export function loadEpilogue(defs: ModuleDef[]): string {
  const lines = ['Modules and their parameters:'];
  for (const d of defs) {
    lines.push(`  ${d.name} — ${d.description ?? ''} [${d.hooks.join(', ')}]${d.kernel ? '' : ' (user space, hosted by itmd)'}`);
    for (const [k, p] of Object.entries(d.params)) {
      lines.push(`      --${k}  ${p.describe}${p.required ? ' (required)' : p.default !== undefined ? ` (default ${p.default})` : ''}`);
    }
  }
  lines.push(
    '',
    'Interest: comma-separated key=value, keys proto, src, dst, sport, dport, indev, outdev, origin, family;',
    'ranges as dport=1000-2000; repeat a key for a set. Example: --interest proto=udp,dport=5001,dst=10.0.0.0/8',
  );
  return lines.join('\n');
}

export function loadCommand(defs: ModuleDef[]): CommandModule<GlobalArgs, Args> {
  return {
    command: 'load <module>',
    describe: 'load a module on a device and hook (sets the device up if needed)',
    builder: (y) =>
      hookOption(devOption(y), "hook (default: the module's last, tc-egress for most)")
        .positional('module', { type: 'string', describe: 'module name', demandOption: true })
        .option('name', {
          type: 'string',
          describe: "instance name, to load a module more than once on a hook (default: the module's name)",
        })
        .option('priority', {
          type: 'number',
          describe: 'position in the chain: lower runs first; equal ones keep load order (default 50)',
        })
        .option('interest', { type: 'string', array: true, describe: 'which packets it sees, e.g. proto=udp,dport=5001,dst=10.0.0.0/8' })
        .strict(false)
        .epilogue(loadEpilogue(defs)) as never,
    handler: async (a) => {
      requireRoot();
      const params: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(a)) {
        if (OWN.has(k)) continue;
        if (Array.isArray(v)) throw new ItmError(`--${k} given more than once`);
        params[k] = v;
      }
      const { resolveModule } = await import('../../catalog.js');
      const { loadModule } = await import('../../control.js');
      const opts = {
        module: a.module,
        ...(a.name ? { name: a.name } : {}),
        dev: a.dev,
        ...(a.hook ? { hook: a.hook as never } : {}),
        ...(a.priority !== undefined ? { priority: a.priority } : {}),
        ...(a.interest ? { interest: a.interest } : {}),
        params,
      };
      const { def } = await resolveModule(a.module);
      // a path is the user's, relative to this directory: the agent, which validates it, runs elsewhere
      for (const [k, spec] of Object.entries(def.params)) {
        if (spec.type === 'path' && params[k] !== undefined && params[k] !== '') params[k] = resolve(String(params[k]));
      }
      const r = await loadModule(opts);
      if (a.json) return printJson({ module: a.module, dev: a.dev, ...r });
      for (const x of [...(r.others ?? []), r]) {
        console.log(
          `${a.name ?? a.module} loaded on ${a.dev} ${x.hook}: position ${x.position} in the chain (priority ${x.priority}, id ${x.id})${x.broughtUp ? '; the dispatcher was set up first' : ''}`,
        );
      }
    },
  };
}
