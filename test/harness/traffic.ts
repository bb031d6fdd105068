// Real traffic between the hosts of a Topology, and tcpdump captures to check it on the wire.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { FLOW_HEADER, FLOW_MAGIC } from './agent.js';
import { withTimeout, type NsProcess, type Topology } from './netns.js';
import type { Family, ParsedPacket } from './packet.js';
import { parsePcapFile } from './pcap.js';

const AGENT = fileURLToPath(new URL('./agent.js', import.meta.url));

type AgentEvent = { ev: string } & Record<string, unknown>;

function startAgent(topo: Topology, host: string, role: string, cfg: object, cpu?: number): NsProcess {
  const pin = cpu === undefined ? [] : ['taskset', '-c', String(cpu)];
  return topo.spawn(host, [...pin, process.execPath, AGENT, role, JSON.stringify(cfg)], { stdin: 'pipe' });
}

/** The next event named one of `names` from an agent (scanning its stdout from line `from`). */
async function agentEvent(p: NsProcess, names: string[], timeoutMs: number, from = 0): Promise<AgentEvent> {
  const { line } = await p.waitForLine(
    (l) => {
      try {
        const ev = (JSON.parse(l) as AgentEvent).ev;
        return names.includes(ev) || ev === 'error';
      } catch {
        return false;
      }
    },
    { timeoutMs, from },
  );
  const ev = JSON.parse(line) as AgentEvent;
  if (ev.ev === 'error') throw new Error(`traffic agent failed: ${String(ev.message)} (${p.argv.slice(-2).join(' ')})`);
  return ev;
}

// ---------------------------------------------------------------------------------------------
// UDP flows

export interface UdpFlowOptions {
  from: string;
  to: string;
  family: Family;
  dport: number;
  /** Source port (default: any). */
  sport?: number;
  /** Number of datagrams; without it (and without durationMs) the flow runs until stop(). */
  count?: number;
  durationMs?: number;
  ratePps: number;
  /** UDP payload bytes, at least 12 (default 64). */
  payloadSize?: number;
  /** How long the receiver keeps listening after the sender's last datagram (default 300 ms). */
  graceMs?: number;
  /** Addresses to use (default: the first of the family of each host). */
  srcAddr?: string;
  dstAddr?: string;
}

export interface UdpFlowResult {
  sent: number;
  received: number;
  /** Sequence numbers sent but never received. */
  missing: number[];
  duplicates: number;
  /** Datagrams that arrived after a higher sequence number. */
  reordered: number;
  /** Datagrams the sender's socket reported as failed. */
  sendErrors: number;
  /** Sender's time from first to last datagram. */
  ms: number;
}

export class UdpFlow {
  private stopping: Promise<UdpFlowResult> | undefined;
  /** Resolves when the sender has sent everything it was asked to (count or duration). */
  readonly done: Promise<AgentEvent>;

  constructor(
    readonly opts: UdpFlowOptions,
    readonly flowId: number,
    readonly sport: number,
    private readonly sender: NsProcess,
    private readonly receiver: NsProcess,
  ) {
    this.done = agentEvent(sender, ['done'], Infinity);
    this.done.catch(() => {
      /* reported by stop() */
    });
  }

  /** What the receiver has seen so far. */
  async stats(): Promise<{ received: number; duplicates: number; maxSeq: number }> {
    const from = this.receiver.stdoutLines.length;
    this.receiver.write('{"cmd":"stats"}\n');
    const ev = await agentEvent(this.receiver, ['stats'], 5000, from);
    return { received: Number(ev.received), duplicates: Number(ev.duplicates), maxSeq: Number(ev.maxSeq) };
  }

  /** Stop sending (if still sending), let the last datagrams arrive, and count. Idempotent. */
  stop(): Promise<UdpFlowResult> {
    this.stopping ??= this.finish();
    return this.stopping;
  }

  private async finish(): Promise<UdpFlowResult> {
    try {
      if (this.sender.running) this.sender.write('{"cmd":"stop"}\n');
      const done = await withTimeout(this.done, 10_000, () => {
        throw new Error('UDP sender did not finish');
      });
      await sleep(this.opts.graceMs ?? 300);
      const from = this.receiver.stdoutLines.length;
      this.receiver.write(`${JSON.stringify({ cmd: 'stop', sent: done.sent })}\n`);
      const r = await agentEvent(this.receiver, ['result'], 10_000, from);
      return {
        sent: Number(done.sent),
        received: Number(r.received),
        missing: r.missing as number[],
        duplicates: Number(r.duplicates),
        reordered: Number(r.reordered),
        sendErrors: Number(done.errors),
        ms: Number(done.ms),
      };
    } finally {
      await Promise.all([this.sender.stop(500), this.receiver.stop(500)]);
    }
  }
}

/** Start a steady UDP flow of numbered datagrams; the receiver is bound before the first is sent. */
export async function startUdpFlow(topo: Topology, opts: UdpFlowOptions): Promise<UdpFlow> {
  const payloadSize = opts.payloadSize ?? 64;
  if (payloadSize < FLOW_HEADER) throw new Error(`payloadSize must be at least ${FLOW_HEADER}`);
  if (!(opts.ratePps > 0)) throw new Error('ratePps must be positive');
  const flowId = (Math.random() * 0xffffffff) >>> 0;
  const dst = opts.dstAddr ?? topo.addr(opts.to, opts.family);
  const src = opts.srcAddr ?? topo.addr(opts.from, opts.family);
  const receiver = startAgent(topo, opts.to, 'udp-recv', { family: opts.family, addr: dst, port: opts.dport, flowId });
  let sender: NsProcess | undefined;
  try {
    await agentEvent(receiver, ['ready'], 10_000);
    sender = startAgent(topo, opts.from, 'udp-send', {
      family: opts.family,
      src,
      dst,
      dport: opts.dport,
      sport: opts.sport ?? 0,
      count: opts.count ?? null,
      durationMs: opts.durationMs ?? null,
      ratePps: opts.ratePps,
      payloadSize,
      flowId,
    });
    const started = await agentEvent(sender, ['started'], 10_000);
    return new UdpFlow(opts, flowId, Number(started.sport), sender, receiver);
  } catch (e) {
    await Promise.all([receiver.stop(0), sender?.stop(0)]);
    throw e;
  }
}

/** A UDP flow of `count` datagrams (or `durationMs`), run to the end. */
export async function udpFlow(topo: Topology, opts: UdpFlowOptions & ({ count: number } | { durationMs: number })): Promise<UdpFlowResult> {
  const f = await startUdpFlow(topo, opts);
  const expectMs = opts.durationMs ?? ((opts.count ?? 0) / opts.ratePps) * 1000;
  try {
    await withTimeout(f.done, expectMs + 10_000, () => {
      throw new Error(`UDP flow did not finish in ${expectMs + 10_000} ms`);
    });
  } catch (e) {
    await f.stop().catch(() => {
      /* report the first error */
    });
    throw e;
  }
  return f.stop();
}

/** Flow id and sequence number of a datagram payload sent by a UDP flow; undefined for others. */
export function decodeFlowPayload(payload: Buffer | undefined): { flowId: number; seq: number } | undefined {
  if (!payload || payload.length < FLOW_HEADER || payload.readUInt32BE(0) !== FLOW_MAGIC) return undefined;
  return { flowId: payload.readUInt32BE(4), seq: payload.readUInt32BE(8) };
}

// ---------------------------------------------------------------------------------------------
// TCP

export interface TcpTransferOptions {
  from: string;
  to: string;
  family: Family;
  dport: number;
  bytes: number;
  timeoutMs?: number;
  srcAddr?: string;
  dstAddr?: string;
  /** run both ends on this CPU: then every packet of the transfer is handled on it, in order (no
   *  reordering between CPUs on the way) */
  cpu?: number;
}

/** Send `bytes` over one TCP connection; the server confirms the count it received. */
/** A TCP transfer of `bytes` from `from` to `to`; throws unless the server got them all, the same
 * bytes as were sent (SHA-256 at both ends). */
export async function tcpTransfer(topo: Topology, opts: TcpTransferOptions): Promise<{ bytes: number; ms: number; sha256: string }> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const dst = opts.dstAddr ?? topo.addr(opts.to, opts.family);
  const src = opts.srcAddr ?? topo.addr(opts.from, opts.family);
  const server = startAgent(topo, opts.to, 'tcp-recv', { family: opts.family, addr: dst, port: opts.dport }, opts.cpu);
  let client: NsProcess | undefined;
  try {
    await agentEvent(server, ['ready'], 10_000);
    client = startAgent(topo, opts.from, 'tcp-send', { family: opts.family, src, dst, dport: opts.dport, bytes: opts.bytes }, opts.cpu);
    const done = await agentEvent(client, ['done'], timeoutMs);
    const got = await agentEvent(server, ['result'], 5000);
    if (Number(done.confirmed) !== opts.bytes || Number(got.bytes) !== opts.bytes) {
      throw new Error(`TCP transfer: sent ${opts.bytes}, server counted ${String(got.bytes)}, confirmed ${String(done.confirmed)}`);
    }
    if (done.sha256 !== got.sha256)
      throw new Error(
        `TCP transfer: the server got other bytes than were sent (SHA-256 ${String(got.sha256)}, sent ${String(done.sha256)})`,
      );
    return { bytes: opts.bytes, ms: Number(done.ms), sha256: String(done.sha256) };
  } finally {
    await Promise.all([server.stop(500), client?.stop(500)]);
  }
}

// ---------------------------------------------------------------------------------------------
// Hand-made frames onto the wire

// Node has no AF_PACKET sockets; python3 (a set-up dependency) sends the frames, one hex line each.
const SEND_FRAMES_PY = `
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
gap = float(sys.argv[2]) / 1000
n = 0
for line in sys.stdin:
    line = line.strip()
    if line:
        if n and gap: time.sleep(gap)
        s.send(bytes.fromhex(line))
        n += 1
print(n)
`;
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** Transmit complete Ethernet frames (e.g. from buildPacket) out of `dev` in `host`, as they are. */
export async function sendFrames(
  topo: Topology,
  host: string,
  dev: string,
  frames: Buffer[],
  opts: { gapMs?: number } = {},
): Promise<number> {
  const r = await topo.exec(host, [PYTHON, '-c', SEND_FRAMES_PY, dev, String(opts.gapMs ?? 0)], {
    input: `${frames.map((f) => f.toString('hex')).join('\n')}\n`,
  });
  return Number(r.stdout.trim());
}

/**
 * The kernel's protocol counters in `host` (/proc/net/snmp, snmp6, netstat) as 'Proto.Name' →
 * value, e.g. 'Udp.InCsumErrors', 'Udp6.InCsumErrors', 'Tcp.InCsumErrors', 'TcpExt.TCPTimeouts'.
 */
export async function netCounters(topo: Topology, host: string): Promise<Record<string, number>> {
  const r = await topo.exec(host, ['cat', '/proc/net/snmp', '/proc/net/netstat', '/proc/net/snmp6']);
  const out: Record<string, number> = {};
  const lines = r.stdout.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const head = /^(\w+): (.*)$/.exec(lines[i]!);
    if (head) {
      // "Udp: Name Name …" followed by "Udp: 1 2 …"
      const vals = /^(\w+): (.*)$/.exec(lines[i + 1] ?? '');
      if (vals && vals[1] === head[1]) {
        const names = head[2]!.trim().split(/\s+/),
          nums = vals[2]!.trim().split(/\s+/);
        names.forEach((n, k) => {
          out[`${head[1]}.${n}`] = Number(nums[k]);
        });
        i++;
      }
      continue;
    }
    const six = /^(Ip6|Icmp6|UdpLite6|Udp6)(\S+)\s+(\d+)$/.exec(lines[i]!);
    if (six) out[`${six[1]}.${six[2]}`] = Number(six[3]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Captures

export interface CaptureOptions {
  dev: string;
  /** A pcap filter expression, e.g. 'udp and dst port 5001'. */
  filter?: string;
  /** tcpdump stops by itself after this many packets (see Capture.wait). */
  count?: number;
  /** Bytes kept per packet (default 256). Checksums are only verified for complete packets. */
  snaplen?: number;
  direction?: 'in' | 'out' | 'inout';
}

export interface CaptureStats {
  captured: number;
  receivedByFilter: number;
  droppedByKernel: number;
}

let captureSeq = 0;

export class Capture {
  stats: CaptureStats | undefined;
  private stopping: Promise<ParsedPacket[]> | undefined;

  constructor(
    readonly file: string,
    private readonly proc: NsProcess,
  ) {}

  /** Stop capturing (after a short settle so packets in flight are written) and parse the file. */
  stop(settleMs = 100): Promise<ParsedPacket[]> {
    this.stopping ??= this.finish(settleMs);
    return this.stopping;
  }

  /** Wait until tcpdump has its `count` packets (or `timeoutMs` passed), then stop and parse. */
  async wait(timeoutMs = 10_000): Promise<ParsedPacket[]> {
    await withTimeout(this.proc.exited, timeoutMs, () => undefined);
    return this.stop(0);
  }

  private async finish(settleMs: number): Promise<ParsedPacket[]> {
    if (this.proc.running) {
      await sleep(settleMs);
      this.proc.signal('SIGINT');
      await withTimeout(this.proc.exited, 3000, () => this.proc.stop(0));
    }
    await this.proc.exited;
    const num = (re: RegExp) => Number(re.exec(this.proc.stderr)?.[1] ?? NaN);
    this.stats = {
      captured: num(/(\d+) packets? captured/),
      receivedByFilter: num(/(\d+) packets? received by filter/),
      droppedByKernel: num(/(\d+) packets? dropped by kernel/),
    };
    if (!existsSync(this.file)) throw new Error(`tcpdump wrote no file:\n${this.proc.stderr}`);
    return parsePcapFile(this.file);
  }
}

/** Start tcpdump on `dev` in `host`; resolves once it is listening. */
export async function capture(topo: Topology, host: string, opts: CaptureOptions): Promise<Capture> {
  const file = join(topo.tmpdir, `capture-${host}-${opts.dev}-${captureSeq++}.pcap`);
  const argv = ['tcpdump', '-i', opts.dev, '-n', '-U', '--immediate-mode', '-Z', 'root', '-s', String(opts.snaplen ?? 256), '-w', file];
  if (opts.count !== undefined) argv.push('-c', String(opts.count));
  if (opts.direction) argv.push('-Q', opts.direction);
  if (opts.filter) argv.push(opts.filter);
  const p = topo.spawn(host, argv);
  try {
    await p.waitFor(/listening on/, { stream: 'stderr', timeoutMs: 10_000 });
  } catch (e) {
    await p.stop(0);
    throw e;
  }
  return new Capture(file, p);
}
