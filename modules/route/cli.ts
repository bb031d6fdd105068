// route's own itmctl command: `itmctl route paths`. itmctl imports this file only for a command
// line that starts with `route`, or for help; the overlay's maps are read in the handler.
import { loadedInstance, printJson, requireRoot, table, type CliArgs, type CliCommand } from '../../src/sdk.js';

interface Args extends CliArgs {
  action: string;
  name: string;
}

const paths: CliCommand<Args> = {
  command: 'route <action>',
  describe: 'the route overlay of this namespace: paths (per destination, every probed path with its RTT and loss, and the one in use)',
  builder: (y) =>
    y.positional('action', { type: 'string', choices: ['paths'], demandOption: true }).option('name', {
      type: 'string',
      default: 'route',
      describe: "the overlay's instance name (with several overlays loaded)",
    }) as never,
  handler: async (a) => {
    requireRoot();
    const { overlayView } = await import('./paths.js');
    const inst = await loadedInstance(a.name);
    let v;
    try {
      v = overlayView((m) => inst.instance.open(m), inst.params);
    } finally {
      inst.instance.close();
    }
    if (a.json) return printJson({ name: a.name, ...v });
    console.log(
      `${a.name}: node ${v.node}, UDP port ${v.port}, data path ${v.datapath === 'user' ? 'in user space (TypeScript over AF_XDP)' : 'in the kernel'}, topology ${v.topology}`,
    );
    for (const d of v.destinations) {
      console.log(
        `  ${d.node} (${d.prefixes.join(', ')}): ${d.next_hop ? (d.next_hop === 'direct' ? 'direct' : `via ${d.next_hop}`) : 'no next hop'}`,
      );
      if (!d.paths.length) {
        console.log('    not probed yet (does itmd run? itmctl agent status)');
        continue;
      }
      console.log(
        table(
          [
            ['', 'path', 'rtt', 'loss', 'answered', 'state', 'last answer'],
            ...d.paths.map((p) => [
              p.in_use ? '*' : '',
              p.via === 'direct' ? 'direct' : `via ${p.via}`,
              p.rtt_ms === null ? '-' : `${p.rtt_ms.toFixed(2)} ms`,
              `${(p.loss * 100).toFixed(1)}%`,
              `${p.answered}/${p.sent}`,
              p.alive ? 'alive' : 'dead',
              p.last_answer_ms === null ? 'never' : `${p.last_answer_ms} ms ago`,
            ]),
          ],
          '    ',
        ),
      );
    }
    const s = v.stats;
    const drops = (
      [
        'no_route',
        'too_big',
        'gso',
        'not_peer',
        'bad_key',
        'bad_tag',
        'replayed',
        'truncated',
        'bad_version',
        'bad_hops',
        'errors',
      ] as const
    )
      .filter((k) => s[k])
      .map((k) => `${k} ${s[k]}`);
    console.log(
      `  data path: encapsulated ${s.encapsulated}, decapsulated ${s.decapsulated}, relayed ${s.relayed}, to control ${s.to_control}, MSS clamped ${s.mss_clamped}, no path ${s.no_path}; dropped: ${drops.join(', ') || 'none'}`,
    );
  },
};

export default paths;
