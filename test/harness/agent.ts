// Traffic end points run inside a test namespace by traffic.ts:
//   node agent.js <role> '<json config>'
// It talks JSON lines: events on stdout, commands on stdin. Roles: udp-recv, udp-send, tcp-recv,
// tcp-send. Not a test file and not meant to be run by hand.
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

/** UDP payload: magic, flow id, sequence number, then zero padding. */
export const FLOW_MAGIC = 0x49544d55; // "ITMU"
export const FLOW_HEADER = 12;

function emit(ev: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(ev)}\n`);
}

function commands(onCommand: (c: Record<string, unknown>) => void): void {
  createInterface({ input: process.stdin }).on('line', (l) => {
    if (l.trim()) onCommand(JSON.parse(l) as Record<string, unknown>);
  });
}

interface UdpRecvConfig {
  family: 4 | 6;
  addr: string;
  port: number;
  flowId: number;
}

function udpRecv(cfg: UdpRecvConfig): void {
  const sock = dgram.createSocket({ type: cfg.family === 4 ? 'udp4' : 'udp6', recvBufferSize: 8 << 20 });
  let counts = new Uint8Array(1024);
  let received = 0,
    duplicates = 0,
    reordered = 0,
    foreign = 0,
    bytes = 0,
    maxSeq = -1;
  let firstUs = 0,
    lastUs = 0;
  sock.on('message', (msg) => {
    if (msg.length < FLOW_HEADER || msg.readUInt32BE(0) !== FLOW_MAGIC || msg.readUInt32BE(4) !== cfg.flowId) {
      foreign++;
      return;
    }
    const seq = msg.readUInt32BE(8);
    const now = Number(process.hrtime.bigint() / 1000n);
    if (!received) firstUs = now;
    lastUs = now;
    if (seq >= counts.length) {
      const bigger = new Uint8Array(Math.max(seq + 1, counts.length * 2));
      bigger.set(counts);
      counts = bigger;
    }
    if (counts[seq]) duplicates++;
    else {
      received++;
      if (seq < maxSeq) reordered++;
    }
    counts[seq] = Math.min(255, counts[seq]! + 1);
    bytes += msg.length;
    maxSeq = Math.max(maxSeq, seq);
  });
  sock.on('error', (e) => {
    emit({ ev: 'error', message: e.message });
    process.exit(1);
  });
  sock.bind(cfg.port, cfg.addr, () => emit({ ev: 'ready' }));
  commands((c) => {
    if (c.cmd === 'stats') emit({ ev: 'stats', received, duplicates, maxSeq });
    if (c.cmd === 'stop') {
      const sent = Number(c.sent ?? maxSeq + 1);
      const missing: number[] = [];
      for (let s = 0; s < sent; s++) if (!counts[s]) missing.push(s);
      const beyond = maxSeq >= sent ? maxSeq - sent + 1 : 0;
      emit({ ev: 'result', received, duplicates, reordered, foreign, bytes, missing, beyond, spanMs: (lastUs - firstUs) / 1000 });
      sock.close();
      process.exit(0);
    }
  });
}

interface UdpSendConfig {
  family: 4 | 6;
  src: string;
  dst: string;
  dport: number;
  sport: number;
  count: number | null;
  durationMs: number | null;
  ratePps: number;
  payloadSize: number;
  flowId: number;
}

function udpSend(cfg: UdpSendConfig): void {
  const sock = dgram.createSocket({ type: cfg.family === 4 ? 'udp4' : 'udp6', sendBufferSize: 4 << 20 });
  const buf = Buffer.alloc(Math.max(FLOW_HEADER, cfg.payloadSize));
  buf.writeUInt32BE(FLOW_MAGIC, 0);
  buf.writeUInt32BE(cfg.flowId, 4);
  let sent = 0,
    errors = 0,
    inFlight = 0,
    stopped = false,
    finished = false;
  let start = 0n;
  const limit = cfg.count ?? Infinity;
  const finish = () => {
    if (finished) return;
    finished = true;
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    const done = () => {
      emit({ ev: 'done', sent, errors, ms });
      sock.close();
      process.exit(0);
    };
    // Wait for the sends already handed to libuv, so `sent` really went out.
    const drain = () => (inFlight ? setTimeout(drain, 1) : done());
    drain();
  };
  const tick = () => {
    if (finished) return;
    const elapsedNs = Number(process.hrtime.bigint() - start);
    const timeUp = cfg.durationMs !== null && elapsedNs >= cfg.durationMs * 1e6;
    const due = Math.min(limit, Math.floor((elapsedNs / 1e9) * cfg.ratePps) + 1);
    // Bounded burst per tick so that a stalled loop does not turn into one huge burst.
    for (let n = 0; sent < due && n < 256 && !stopped && !timeUp; n++) {
      // A fresh buffer each time: dgram.send holds on to it until the (asynchronous) send happens.
      const datagram = Buffer.from(buf);
      datagram.writeUInt32BE(sent, 8);
      inFlight++;
      sock.send(datagram, cfg.dport, cfg.dst, (err) => {
        inFlight--;
        if (err) errors++;
      });
      sent++;
    }
    if (stopped || timeUp || sent >= limit) {
      finish();
      return;
    }
    const nextNs = (sent / cfg.ratePps) * 1e9 - Number(process.hrtime.bigint() - start);
    setTimeout(tick, Math.max(0, Math.floor(nextNs / 1e6)));
  };
  sock.on('error', (e) => {
    emit({ ev: 'error', message: e.message });
    process.exit(1);
  });
  sock.bind(cfg.sport, cfg.src, () => {
    emit({ ev: 'started', sport: sock.address().port });
    start = process.hrtime.bigint();
    tick();
  });
  commands((c) => {
    if (c.cmd === 'stop') {
      stopped = true;
      finish();
    }
  });
}

interface TcpRecvConfig {
  family: 4 | 6;
  addr: string;
  port: number;
}

function tcpRecv(cfg: TcpRecvConfig): void {
  const server = net.createServer({ allowHalfOpen: true }, (conn) => {
    server.close();
    let bytes = 0;
    const t0 = process.hrtime.bigint();
    const digest = createHash('sha256');
    conn.on('data', (d: Buffer) => {
      bytes += d.length;
      digest.update(d);
    });
    conn.on('end', () => {
      conn.end(`${bytes}\n`, () => {
        emit({ ev: 'result', bytes, ms: Number(process.hrtime.bigint() - t0) / 1e6, sha256: digest.digest('hex') });
        process.exit(0);
      });
    });
    conn.on('error', (e) => {
      emit({ ev: 'error', message: e.message });
      process.exit(1);
    });
  });
  server.on('error', (e) => {
    emit({ ev: 'error', message: e.message });
    process.exit(1);
  });
  server.listen({ port: cfg.port, host: cfg.addr, ipv6Only: cfg.family === 6 }, () => emit({ ev: 'ready' }));
}

interface TcpSendConfig {
  family: 4 | 6;
  src: string;
  dst: string;
  dport: number;
  bytes: number;
}

function tcpSend(cfg: TcpSendConfig): void {
  const t0 = process.hrtime.bigint();
  // bytes that differ along the stream, so that the receiver's digest shows any one out of place
  const chunk = Buffer.alloc(64 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = ((i * 2654435761) >>> 24) ^ (i >>> 8);
  const digest = createHash('sha256');
  let left = cfg.bytes;
  let reply = '';
  const sock = net.connect({ host: cfg.dst, port: cfg.dport, localAddress: cfg.src, family: cfg.family, allowHalfOpen: true }, () => {
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        const part = n === chunk.length ? chunk : chunk.subarray(0, n);
        digest.update(part);
        if (!sock.write(part)) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    pump();
  });
  sock.setEncoding('utf8');
  sock.on('data', (s: string) => {
    reply += s;
  });
  sock.on('end', () => {
    const confirmed = Number(reply.trim());
    emit({ ev: 'done', bytes: cfg.bytes, confirmed, ms: Number(process.hrtime.bigint() - t0) / 1e6, sha256: digest.digest('hex') });
    process.exit(confirmed === cfg.bytes ? 0 : 1);
  });
  sock.on('error', (e) => {
    emit({ ev: 'error', message: e.message });
    process.exit(1);
  });
}

const roles: Record<string, (cfg: never) => void> = { 'udp-recv': udpRecv, 'udp-send': udpSend, 'tcp-recv': tcpRecv, 'tcp-send': tcpSend };

// Only when run as a program: traffic.ts imports the payload constants from here.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [role, json] = process.argv.slice(2);
  const main = role ? roles[role] : undefined;
  if (!main || !json) {
    process.stderr.write(`usage: agent.js ${Object.keys(roles).join('|')} '<json config>'\n`);
    process.exit(2);
  }
  main(JSON.parse(json) as never);
}
