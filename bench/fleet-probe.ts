// The measuring end of fleet.converge_ms, run inside the etcd host's namespace (bench/fleet.ts):
// puts each value in turn under a key and waits, polling the nodes' status keys every 2 ms, until
// every node says it applied that put's revision. Prints the times (ms) as JSON.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Etcd3 } from 'etcd3';

interface Args {
  url: string;
  prefix: string;
  nodes: string[];
  key: string;
  values: string;
  rounds: number;
}

const a = JSON.parse(process.argv[2]!) as Args;
const values = JSON.parse(readFileSync(a.values, 'utf8')) as string[];
const c = new Etcd3({ hosts: a.url });
const applied = async (rev: number) => {
  const st = await c.getAll().prefix(`${a.prefix}status/`).strings();
  return a.nodes.every((n) => {
    const v = st[`${a.prefix}status/${n}`];
    return v !== undefined && ((JSON.parse(v) as { applied?: { revision: number } }).applied?.revision ?? 0) >= rev;
  });
};
const out: number[] = [];
try {
  for (let i = 0; i < a.rounds; i++) {
    const t = performance.now();
    const rev = Number(
      (
        await c
          .put(a.key)
          .value(values[i % values.length]!)
          .exec()
      ).header!.revision,
    );
    const end = t + 30_000;
    while (!(await applied(rev))) {
      if (performance.now() > end) throw new Error(`round ${i}: not every node applied revision ${rev} within 30 s`);
      await sleep(2);
    }
    out.push(performance.now() - t);
    await sleep(300); // the controllers take the new topology before the next change
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  c.close();
}
