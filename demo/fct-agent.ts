// Traffic end points of the qos demo, run inside its namespaces: node fct-agent.js <role> '<json>'.
// JSON lines: events on stdout, commands on stdin. Roles:
//   server    a bulk sink (counts bytes) and a request server (reads a request, answers one byte)
//   bulk      N long TCP uploads, as fast as the path allows, until told to stop
//   requests  short TCP requests (connect, send SIZE bytes, wait for the answer), timed one by one
import net from 'node:net';
import { createInterface } from 'node:readline';

const emit = (ev: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(ev)}\n`);
const onCommand = (fn: (c: Record<string, unknown>) => void) =>
  createInterface({ input: process.stdin }).on('line', (l) => {
    if (l.trim()) fn(JSON.parse(l) as Record<string, unknown>);
  });
const fail = (e: Error) => {
  emit({ ev: 'error', message: e.message });
  process.exit(1);
};

function server(cfg: { addr: string; bulkPort: number; reqPort: number }): void {
  let bulkBytes = 0;
  const bulk = net.createServer((s) =>
    s
      .on('data', (d) => {
        bulkBytes += d.length;
      })
      .on('error', () => s.destroy()),
  );
  const req = net.createServer((s) => {
    let want = -1;
    let got = Buffer.alloc(0);
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
      if (want < 0 && got.length >= 4) want = got.readUInt32BE(0) + 4;
      if (want >= 0 && got.length >= want) {
        s.end('k');
        want = Infinity;
      }
    }).on('error', () => s.destroy());
  });
  let listening = 0;
  const ready = () => {
    if (++listening === 2) emit({ ev: 'ready' });
  };
  bulk.on('error', fail).listen(cfg.bulkPort, cfg.addr, ready);
  req.on('error', fail).listen(cfg.reqPort, cfg.addr, ready);
  onCommand((c) => {
    if (c.cmd === 'stats') emit({ ev: 'stats', bulkBytes, atMs: performance.now() });
  });
}

function bulk(cfg: { dst: string; port: number; flows: number }): void {
  const chunk = Buffer.alloc(64 * 1024, 0x42);
  const socks: net.Socket[] = [];
  let connected = 0;
  for (let i = 0; i < cfg.flows; i++) {
    const s = net.connect(cfg.port, cfg.dst, () => {
      const pump = () => {
        while (s.write(chunk));
      };
      s.on('drain', pump);
      pump();
      if (++connected === cfg.flows) emit({ ev: 'started' });
    });
    s.on('error', () => {
      /* the stop closes them */
    });
    socks.push(s);
  }
  onCommand((c) => {
    if (c.cmd === 'stop') {
      for (const s of socks) s.destroy();
      emit({ ev: 'stopped' });
      process.exit(0);
    }
  });
}

function requests(cfg: { dst: string; port: number; size: number; count: number; concurrency: number }): void {
  const payload = Buffer.alloc(4 + cfg.size, 0x61);
  payload.writeUInt32BE(cfg.size, 0);
  const fct: number[] = [];
  let started = 0;
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const t0 = performance.now();
      const s = net.connect(cfg.port, cfg.dst, () => s.write(payload));
      s.once('data', () => {
        fct.push(performance.now() - t0);
        s.destroy();
        resolve();
      });
      s.on('error', reject);
      s.setTimeout(30_000, () => {
        s.destroy();
        reject(new Error('request timed out'));
      });
    });
  const loop = async () => {
    while (started < cfg.count) {
      started++;
      await one();
    }
  };
  Promise.all(Array.from({ length: cfg.concurrency }, loop)).then(() => {
    emit({ ev: 'result', fct });
    process.exit(0);
  }, fail);
}

const [role, json] = process.argv.slice(2);
const cfg = JSON.parse(json ?? '{}');
if (role === 'server') server(cfg);
else if (role === 'bulk') bulk(cfg);
else if (role === 'requests') requests(cfg);
else fail(new Error(`unknown role ${role}`));
