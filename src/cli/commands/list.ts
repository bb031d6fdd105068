import type { CommandModule } from 'yargs';
import { dscpName } from '../../dscp.js';
import type { HookView } from '../../registry/index.js';
import { devOption, printJson, requireRoot, table, type GlobalArgs } from '../common.js';

/** how a hook's dispatcher is attached: `tcx (link N)`, `cls_bpf`, or at xdp its mode */
const how = (h: HookView) =>
  h.attachment === 'tcx' ? `tcx (link ${h.linkId ?? '?'})` : h.attachment === 'xdp' ? `xdp, ${h.mode ?? '?'}` : h.attachment;

interface Args extends GlobalArgs {
  dev?: string;
}

export const listCommand: CommandModule<GlobalArgs, Args> = {
  command: ['list', 'ls'],
  describe: 'per device and hook: the modules in chain order, their interest, parameters and counters',
  builder: (y) => devOption(y, false) as never,
  handler: async (a) => {
    requireRoot();
    const { list } = await import('../../registry/index.js');
    const devs = list(a.dev);
    if (a.json) return printJson(devs);
    if (!devs.length) return console.log('nothing is set up in this network namespace (itmctl up --dev DEV, or itmctl load ...)');
    for (const d of devs) {
      console.log(`${d.dev} (ifindex ${d.ifindex})`);
      for (const h of d.hooks) {
        if (h.foreignLayout !== undefined) {
          console.log(
            `  ${h.hook}: set up by another itm (pin layout ${h.foreignLayout}), which this one does not read; itmctl down --dev ${d.dev} --hook ${h.hook} removes it`,
          );
          continue;
        }
        const p = h.packets;
        const unparsed = (p.non_ip ?? 0) + (p.truncated ?? 0) + (p.malformed ?? 0) + (p.unsupported ?? 0);
        console.log(
          `  ${h.hook}: dispatcher ${h.attached ? `attached (${how(h)}, prog ${h.progId})` : 'NOT ATTACHED (itmctl up repairs it)'}; ` +
            `packets ${p.packets ?? 0}, parsed ${p.parsed ?? 0}, passed unparsed ${unparsed}` +
            (unparsed ? ` (non-ip ${p.non_ip}, truncated ${p.truncated}, malformed ${p.malformed}, unsupported ${p.unsupported})` : '') +
            (p.chain_errors ? `, chain errors ${p.chain_errors}` : '') +
            (p.returned || p.bad_returns
              ? `; back from user modules ${p.returned}${p.bad_returns ? `, bad returns ${p.bad_returns}` : ''}`
              : '') +
            (p.segmented || p.seg_unavailable
              ? `; super-packets cut into segments ${p.segmented} (${p.segments} segments)${p.seg_unavailable ? `, with no segmentation pair to cut them ${p.seg_unavailable}` : ''}`
              : ''),
        );
        if (!h.modules.length) {
          console.log('    no modules');
          continue;
        }
        const rows = [['#', 'module', 'prio', 'interest', 'params', 'seen', 'matched', 'classes', 'dropped', 'errors']];
        for (const m of h.modules) {
          const params = Object.entries(m.params)
            .map(([k, v]) => `${k}=${k === 'dscp' && typeof v === 'number' ? dscpName(v) : v}`)
            .join(' ');
          const classes =
            Object.entries(m.counters.classes)
              .map(([c, n]) => `${c}:${n}`)
              .join(' ') || '-';
          rows.push([
            String(m.position),
            m.name === m.module ? m.name : `${m.name} (${m.module})`,
            String(m.priority),
            m.interest,
            params || '-',
            String(m.counters.seen),
            String(m.counters.matched),
            classes,
            String(m.counters.dropped),
            String(m.counters.errors),
          ]);
        }
        console.log(table(rows, '    '));
        // what only user-space modules have: whether their host serves, and what went past them
        for (const m of h.modules) {
          const u = m.user;
          if (!u) continue;
          const by = u.bypassed;
          const past = u.failClosed ? 'dropped, failing closed,' : 'bypassed';
          console.log(
            `    ${m.name}: user space, ${u.serving ? 'serving' : `NOT SERVING (its packets are ${u.failClosed ? 'dropped' : 'let past it'}; is itmd running?)`}; ` +
              `diverted ${u.diverted}, in flight ${u.inFlight}, modified ${u.modified}, malformed ${u.malformed}; ` +
              `${past} ${by.down + by.behind + by.size} (host down ${by.down}, behind ${by.behind}, too long ${by.size})`,
          );
        }
      }
    }
  },
};
