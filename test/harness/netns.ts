// Network-namespace topologies for tests: hosts joined by veth pairs, built from a small
// declaration, always torn down (also when a test fails, on SIGINT/SIGTERM and at process exit).
//
// Everything it creates is named `itmt-<pid>-<n>-<host>`; interfaces exist only inside those
// namespaces (each veth pair is created from inside one of them), so the machine's own interfaces
// are never touched. Child processes are tracked and killed by process group id.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ipFamily, type Family } from './packet.js';

export const NS_PREFIX = `itmt-${process.pid}-`;
const NETNS_DIR = '/run/netns';

// ---------------------------------------------------------------------------------------------
// Declaration

export interface LinkDecl {
  a: string;
  b: string;
  /** Addresses with prefix length per end, e.g. { client: ['10.1.0.1/24', 'fd01::1/64'] }. */
  addrs?: Record<string, string[]>;
  /** Interface names per end (default `eth-<peer>`, made unique per host, at most 15 characters). */
  devs?: Record<string, string>;
  mtu?: number;
}

/** A rate limit (TBF) at `host`'s egress towards `towards`. */
export interface BottleneckDecl {
  host: string;
  towards: string;
  rate: string;
  burst?: string;
  latency?: string;
}

export interface TopologyDecl {
  hosts: string[];
  links: LinkDecl[];
  /** `ip route add` arguments per host; a leading `-6` (or `-4`) selects the family. */
  routes?: Record<string, string[]>;
  /** Hosts with IPv4 and IPv6 forwarding on. */
  forwarding?: string[];
  /** 'on' (default): offloads as the kernel sets them (checksum offload, TSO and GSO on, GRO
   *  off on a veth), the paths real hosts have. 'off': tx checksum offload, TSO, GSO and GRO off
   *  on every veth, for a test that needs complete checksums on the wire and no super-packets
   *  anywhere (say why where you use it). */
  offloads?: 'off' | 'on';
  /** Extra sysctls per host, e.g. { itm: { 'net.netfilter.nf_conntrack_acct': 1 } }. */
  sysctls?: Record<string, Record<string, string | number>>;
  bottlenecks?: BottleneckDecl[];
}

export interface DevInfo {
  host: string;
  dev: string;
  peer: string;
  peerDev: string;
  ifindex: number;
  mac: string;
  addrs: string[];
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}
export interface ExecResult extends ExitInfo {
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Throw an ExecError on a non-zero exit (default true). */
  check?: boolean;
  input?: string | Buffer;
  /** Kill the command after this long (default 30 s) and fail. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** 'pipe' to write to the child's stdin (default 'ignore'). */
  stdin?: 'pipe' | 'ignore';
}

export class ExecError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: ExecResult,
    why?: string,
  ) {
    const status = result.signal ? `signal ${result.signal}` : `exit code ${result.code}`;
    super(`${why ?? `command failed (${status})`}: ${argv.join(' ')}${result.stderr.trim() ? `\n${result.stderr.trim()}` : ''}`);
    this.name = 'ExecError';
  }
}

const OUTPUT_CAP = 8 << 20;

/** `p`, or what `onTimeout` gives if `p` has not settled after `ms`. Unlike a race with a sleep,
 *  the timer is cleared at once, so it never keeps the process alive. */
export async function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => T | Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<typeof TIMED_OUT>((r) => {
    timer = setTimeout(() => r(TIMED_OUT), ms);
  });
  try {
    const v = await Promise.race([p, expired]);
    return v === TIMED_OUT ? await onTimeout() : (v as T);
  } finally {
    clearTimeout(timer);
  }
}
const TIMED_OUT: unique symbol = Symbol('timed out');
// setpriv makes the kernel kill the child if this process dies without running its exit hooks.
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** A child process in its own process group; output is collected, stdout also split in lines. */
export class NsProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<ExitInfo>;
  exitInfo: ExitInfo | undefined;
  stdout = '';
  stderr = '';
  private readonly lines: string[] = [];
  private partial = '';
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly argv: readonly string[],
    opts: SpawnOptions & { stdin?: 'pipe' | 'ignore' } = {},
  ) {
    const [cmd, ...args] = argv;
    if (!cmd) throw new Error('empty argv');
    this.child = spawn(cmd, args, {
      stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
      detached: true,
      env: opts.env ?? process.env,
      cwd: opts.cwd,
    });
    let spawnError: Error | undefined;
    this.exited = new Promise<ExitInfo>((resolve) => {
      this.child.on('error', (e) => {
        spawnError = e;
        this.stderr += `${e.message}\n`;
      });
      this.child.on('close', (code, signal) => {
        if (this.partial) {
          this.lines.push(this.partial);
          this.partial = '';
        }
        this.exitInfo = { code: spawnError && code === null && !signal ? -1 : code, signal };
        this.notify();
        resolve(this.exitInfo);
      });
    });
    this.pid = this.child.pid ?? -1;
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      if (this.stdout.length < OUTPUT_CAP) this.stdout += s;
      const parts = (this.partial + s).split('\n');
      this.partial = parts.pop() ?? '';
      this.lines.push(...parts);
      this.notify();
    });
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (this.stderr.length < OUTPUT_CAP) this.stderr += s;
      this.notify();
    });
    this.child.stdin?.on('error', () => {
      /* the child went away; its exit tells the story */
    });
  }

  get running(): boolean {
    return this.exitInfo === undefined && this.pid > 0;
  }

  /** Complete stdout lines so far. */
  get stdoutLines(): readonly string[] {
    return this.lines;
  }

  write(data: string | Buffer): void {
    this.child.stdin?.write(data);
  }

  private notify(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Resolve when `test` returns a value (it is re-run on every output and at exit). */
  private until<T>(test: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        let v: T | undefined;
        try {
          v = test();
        } catch (e) {
          finish();
          reject(e as Error);
          return;
        }
        if (v !== undefined) {
          finish();
          resolve(v);
          return;
        }
        if (this.exitInfo) {
          finish();
          reject(
            new Error(`${what}: process exited first (${JSON.stringify(this.exitInfo)}): ${this.argv.join(' ')}\n${this.stderr.trim()}`),
          );
        }
      };
      const timer = Number.isFinite(timeoutMs)
        ? setTimeout(() => {
            finish();
            reject(new Error(`${what}: timed out after ${timeoutMs} ms: ${this.argv.join(' ')}\n${this.stderr.trim()}`));
          }, timeoutMs)
        : undefined;
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Wait for a pattern in stdout, stderr or either; resolves with the match. Rejects if the
   *  process exits first or after `timeoutMs` (default 10 s; Infinity for no limit). */
  waitFor(pattern: RegExp | string, opts: { stream?: 'stdout' | 'stderr' | 'both'; timeoutMs?: number } = {}): Promise<RegExpMatchArray> {
    const re = typeof pattern === 'string' ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : pattern;
    const stream = opts.stream ?? 'both';
    return this.until(
      () => {
        const m = (stream !== 'stderr' ? this.stdout.match(re) : null) ?? (stream !== 'stdout' ? this.stderr.match(re) : null);
        return m ?? undefined;
      },
      opts.timeoutMs ?? 10_000,
      `waiting for ${re}`,
    );
  }

  /** Wait for a stdout line (at index `from` or later) that satisfies `pred`; resolves with its index and text. */
  waitForLine(pred: (line: string) => boolean, opts: { from?: number; timeoutMs?: number } = {}): Promise<{ index: number; line: string }> {
    return this.until(
      () => {
        for (let i = opts.from ?? 0; i < this.lines.length; i++) if (pred(this.lines[i]!)) return { index: i, line: this.lines[i]! };
        return undefined;
      },
      opts.timeoutMs ?? 10_000,
      'waiting for an output line',
    );
  }

  /** Signal the whole process group (by id). */
  signal(sig: NodeJS.Signals): void {
    if (this.pid <= 0) return;
    try {
      process.kill(-this.pid, sig);
    } catch {
      try {
        if (this.running) process.kill(this.pid, sig);
      } catch {
        /* already gone */
      }
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; also kills what the process left in its group. */
  async stop(graceMs = 1000): Promise<ExitInfo> {
    if (this.running) {
      this.signal('SIGTERM');
      await withTimeout(this.exited, graceMs, () => {
        this.signal('SIGKILL');
        return this.exited;
      });
    }
    this.signal('SIGKILL');
    return this.exited;
  }

  result(): ExecResult {
    return { stdout: this.stdout, stderr: this.stderr, code: this.exitInfo?.code ?? null, signal: this.exitInfo?.signal ?? null };
  }
}

async function runTracked(argv: string[], opts: ExecOptions, track?: Set<NsProcess>): Promise<ExecResult> {
  const p = new NsProcess(argv, { env: opts.env, cwd: opts.cwd, stdin: opts.input !== undefined ? 'pipe' : 'ignore' });
  track?.add(p);
  try {
    if (opts.input !== undefined) p.child.stdin!.end(opts.input);
    const timeoutMs = opts.timeoutMs ?? 30_000;
    await withTimeout(p.exited, timeoutMs, async () => {
      await p.stop(0);
      throw new ExecError(argv, p.result(), `timed out after ${timeoutMs} ms`);
    });
    const r = p.result();
    if ((opts.check ?? true) && r.code !== 0) throw new ExecError(argv, r);
    return r;
  } finally {
    track?.delete(p);
  }
}

/** Run a command in this (the root) namespace. */
export function run(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return runTracked(argv, opts);
}

// ---------------------------------------------------------------------------------------------
// Safety net: what is still up at exit or on SIGINT/SIGTERM is torn down.

const live = new Set<Topology>();
let hooksInstalled = false;

function onExit(): void {
  for (const t of [...live]) t.destroySync();
}

async function onSignal(sig: NodeJS.Signals): Promise<void> {
  const all = Promise.allSettled([...live].map((t) => t.destroy()));
  await withTimeout(all, 5000, () => []);
  onExit();
  uninstallHooks();
  // Let the default action (or whoever else listens) handle the signal now that we are clean.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}
const onSigint = () => void onSignal('SIGINT');
const onSigterm = () => void onSignal('SIGTERM');

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', onExit);
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
}

function uninstallHooks(): void {
  if (!hooksInstalled) return;
  hooksInstalled = false;
  process.off('exit', onExit);
  process.off('SIGINT', onSigint);
  process.off('SIGTERM', onSigterm);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let staleSwept = false;
/** Delete namespaces and temp dirs that earlier runs of this harness left behind (their process is
 *  gone). Only names of the form `itmt-<pid>-…` with a dead pid are touched. */
export function removeStaleNamespaces(): string[] {
  const removed: string[] = [];
  const stale = (name: string) => {
    const m = /^itmt-(\d+)-/.exec(name);
    return !!m && Number(m[1]) !== process.pid && !pidAlive(Number(m[1]));
  };
  const names = existsSync(NETNS_DIR) ? readdirSync(NETNS_DIR).filter(stale) : [];
  if (names.length) {
    spawnSync('ip', ['-force', '-batch', '-'], {
      input: names.map((n) => `netns del ${n}\n`).join(''),
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    removed.push(...names);
  }
  for (const d of readdirSync(tmpdir()).filter(stale)) rmSync(join(tmpdir(), d), { recursive: true, force: true });
  return removed;
}

/** Why namespace tests cannot run here, or undefined when they can. For `{ skip: … }`. */
export function namespaceSkipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  if (spawnSync('ip', ['-V']).status !== 0) return 'needs iproute2 (ip)';
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Topology

const HOST_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/;
const DEV_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;
let topoSeq = 0;

const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface DevState {
  dev: string;
  peer: string;
  peerDev: string;
  addrs: string[];
  mtu: number | undefined;
  ifindex: number;
  mac: string;
}

export class Topology {
  readonly hosts: readonly string[];
  readonly decl: TopologyDecl;
  /** Temp directory for this topology (captures, scripts); removed at teardown. */
  tmpdir = '';
  private readonly nsNames = new Map<string, string>();
  private readonly devices = new Map<string, DevState[]>();
  private readonly inodes = new Map<string, number>();
  private readonly procs = new Set<NsProcess>();
  private readonly cleanups: Array<() => unknown> = [];
  /** Interface names of each declared link's two ends, in declaration order. */
  private readonly linkDevs: Array<{ devA: string; devB: string }> = [];
  private readonly seq = topoSeq++;
  private destroying: Promise<void> | undefined;
  private gone = false;

  private constructor(decl: TopologyDecl) {
    this.decl = decl;
    this.hosts = [...decl.hosts];
    for (const h of decl.hosts) {
      if (!HOST_RE.test(h)) throw new Error(`bad host name ${JSON.stringify(h)} (letters, digits, _ and -; at most 32)`);
      if (this.nsNames.has(h)) throw new Error(`host ${h} declared twice`);
      this.nsNames.set(h, `${NS_PREFIX}${this.seq}-${h}`);
      this.devices.set(h, []);
    }
    const known = (h: string, what: string) => {
      if (!this.nsNames.has(h)) throw new Error(`${what}: unknown host ${h}`);
    };
    for (const l of decl.links) {
      known(l.a, 'link');
      known(l.b, 'link');
      if (l.a === l.b) throw new Error(`link from ${l.a} to itself`);
      for (const h of Object.keys(l.addrs ?? {}))
        if (h !== l.a && h !== l.b) throw new Error(`link ${l.a}–${l.b}: addresses for ${h}, which is not on it`);
      for (const a of Object.values(l.addrs ?? {}).flat()) ipFamily(a.split('/')[0] ?? '');
      const devA = this.devName(l.a, l.b, l.devs?.[l.a]);
      const devB = this.devName(l.b, l.a, l.devs?.[l.b]);
      this.devices.get(l.a)!.push({ dev: devA, peer: l.b, peerDev: devB, addrs: l.addrs?.[l.a] ?? [], mtu: l.mtu, ifindex: 0, mac: '' });
      this.devices.get(l.b)!.push({ dev: devB, peer: l.a, peerDev: devA, addrs: l.addrs?.[l.b] ?? [], mtu: l.mtu, ifindex: 0, mac: '' });
      this.linkDevs.push({ devA, devB });
    }
    for (const h of [...Object.keys(decl.routes ?? {}), ...(decl.forwarding ?? []), ...Object.keys(decl.sysctls ?? {})])
      known(h, 'routes/forwarding/sysctls');
    for (const b of decl.bottlenecks ?? []) {
      known(b.host, 'bottleneck');
      this.dev(b.host, b.towards);
    }
  }

  private devName(host: string, peer: string, wanted?: string): string {
    const used = new Set(this.devices.get(host)!.map((d) => d.dev));
    if (wanted !== undefined) {
      if (!DEV_RE.test(wanted) || wanted === 'lo') throw new Error(`bad interface name ${JSON.stringify(wanted)} (at most 15 characters)`);
      if (used.has(wanted)) throw new Error(`interface ${wanted} declared twice on ${host}`);
      return wanted;
    }
    const base = `eth-${peer}`;
    for (let k = 1; ; k++) {
      const suffix = k === 1 ? '' : String(k);
      const name = base.slice(0, 15 - suffix.length) + suffix;
      if (!used.has(name)) return name;
    }
  }

  /** Build the topology; on failure whatever was made is removed again. */
  static async create(decl: TopologyDecl): Promise<Topology> {
    if (!staleSwept) {
      staleSwept = true;
      removeStaleNamespaces();
    }
    const t = new Topology(decl);
    live.add(t);
    installHooks();
    try {
      await t.build();
    } catch (e) {
      await t.destroy().catch(() => {
        /* the build error is the one to report */
      });
      throw e;
    }
    return t;
  }

  private hostsWith<T>(fn: (host: string, ns: string) => Promise<T>): Promise<T[]> {
    return Promise.all(this.hosts.map((h) => fn(h, this.ns(h))));
  }

  private async build(): Promise<void> {
    this.tmpdir = await mkdtemp(join(tmpdir(), `${NS_PREFIX}${this.seq}-`));
    await run(['ip', '-batch', '-'], { input: this.hosts.map((h) => `netns add ${this.ns(h)}\n`).join('') });

    // Each veth pair is created from inside its first host, its peer end directly in the second.
    await this.hostsWith(async (h, ns) => {
      // Distinct ifindexes on the two ends: the kernel treats a carrier change on a device whose
      // ifindex equals its peer's (which fresh namespaces make likely) as not urgent, and delays it
      // (and with it the qdisc activation) by up to a second.
      const lines = this.decl.links.flatMap((l, i) =>
        l.a === h
          ? [
              `link add ${this.linkDevs[i]!.devA} index ${10 + 2 * i} type veth peer name ${this.linkDevs[i]!.devB} index ${11 + 2 * i} netns ${this.ns(l.b)}\n`,
            ]
          : [],
      );
      if (lines.length) await run(['ip', '-n', ns, '-batch', '-'], { input: lines.join('') });
    });

    // sysctls and offloads need a process inside the namespace: one per host.
    await this.hostsWith(async (h) => {
      const devs = this.devices.get(h)!;
      const ctl: Record<string, string | number> = {
        'net.ipv6.conf.all.accept_dad': 0,
        'net.ipv6.conf.default.accept_dad': 0,
        'net.ipv6.conf.default.router_solicitations': 0,
      };
      for (const d of devs) {
        ctl[`net/ipv6/conf/${d.dev}/accept_dad`] = 0;
        ctl[`net/ipv6/conf/${d.dev}/router_solicitations`] = 0;
      }
      if (this.decl.forwarding?.includes(h)) {
        ctl['net.ipv4.ip_forward'] = 1;
        ctl['net.ipv6.conf.all.forwarding'] = 1;
      }
      Object.assign(ctl, this.decl.sysctls?.[h] ?? {});
      const script = [
        'set -e',
        `sysctl -q -w ${Object.entries(ctl)
          .map(([k, v]) => shq(`${k}=${v}`))
          .join(' ')}`,
      ];
      if (this.decl.offloads === 'off') {
        for (const d of devs) script.push(`ethtool -K ${shq(d.dev)} tx off tso off gso off gro off`);
      }
      await this.exec(h, ['sh', '-c', script.join('\n')]);
    });

    await this.hostsWith(async (h, ns) => {
      const lines = ['link set lo up'];
      for (const d of this.devices.get(h)!) {
        if (d.mtu) lines.push(`link set dev ${d.dev} mtu ${d.mtu}`);
        for (const a of d.addrs) lines.push(`address add ${a} dev ${d.dev}${ipFamily(a.split('/')[0]!) === 6 ? ' nodad' : ''}`);
        lines.push(`link set dev ${d.dev} up`);
      }
      await run(['ip', '-n', ns, '-batch', '-'], { input: lines.map((l) => `${l}\n`).join('') });
    });

    await this.hostsWith((h) => this.waitReady(h));

    await this.hostsWith(async (h, ns) => {
      const byFamily = new Map<string, string[]>([
        ['', []],
        ['-4', []],
        ['-6', []],
      ]);
      for (const r of this.decl.routes?.[h] ?? []) {
        const m = /^\s*(-[46])\s+(.*)$/.exec(r);
        byFamily.get(m?.[1] ?? '')!.push(`route add ${m ? m[2] : r.trim()}\n`);
      }
      for (const [fam, lines] of byFamily) {
        if (lines.length) await run(['ip', ...(fam ? [fam] : []), '-n', ns, '-batch', '-'], { input: lines.join('') });
      }
      const tcLines = (this.decl.bottlenecks ?? [])
        .filter((b) => b.host === h)
        .map(
          (b) =>
            `qdisc replace dev ${this.dev(h, b.towards)} root tbf rate ${b.rate} burst ${b.burst ?? '32kb'} latency ${b.latency ?? '100ms'}\n`,
        );
      if (tcLines.length) await run(['tc', '-n', ns, '-batch', '-'], { input: tcLines.join('') });
    });

    for (const h of this.hosts) this.inodes.set(h, statSync(join(NETNS_DIR, this.ns(h))).ino);
  }

  /** Until every veth is up with carrier and no IPv6 address is tentative; records ifindex and MAC. */
  private async waitReady(h: string): Promise<void> {
    const devs = this.devices.get(h)!;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await run(['ip', '-n', this.ns(h), '-j', 'address', 'show']);
      const links = JSON.parse(r.stdout) as Array<{
        ifindex: number;
        ifname: string;
        operstate: string;
        address: string;
        addr_info?: Array<{ tentative?: boolean }>;
      }>;
      let ready = true;
      for (const d of devs) {
        const l = links.find((x) => x.ifname === d.dev);
        if (!l) throw new Error(`${h}: interface ${d.dev} is missing`);
        d.ifindex = l.ifindex;
        d.mac = l.address;
        if (l.operstate !== 'UP' || l.addr_info?.some((a) => a.tentative)) ready = false;
      }
      if (ready) return;
      if (Date.now() > deadline) throw new Error(`${h}: interfaces not up after 10 s:\n${r.stdout}`);
      await sleep(5);
    }
  }

  // -- lookups --------------------------------------------------------------------------------

  /** The namespace's real name. */
  ns(host: string): string {
    const n = this.nsNames.get(host);
    if (!n) throw new Error(`unknown host ${host}`);
    return n;
  }

  /** The namespace names, in host order. */
  get namespaces(): string[] {
    return this.hosts.map((h) => this.ns(h));
  }

  /** `host`'s interface on its `nth` link towards `peer`. */
  dev(host: string, peer: string, nth = 0): string {
    const d = this.devInfo(host, peer, nth);
    return d.dev;
  }

  private devInfo(host: string, peer: string, nth = 0): DevState {
    this.ns(host);
    const d = this.devices.get(host)!.filter((x) => x.peer === peer)[nth];
    if (!d) throw new Error(`${host} has no link #${nth} towards ${peer}`);
    return d;
  }

  /** Every interface of `host` (declaration order), with ifindex and MAC once built. */
  devs(host: string): DevInfo[] {
    this.ns(host);
    return this.devices
      .get(host)!
      .map((d) => ({ host, dev: d.dev, peer: d.peer, peerDev: d.peerDev, ifindex: d.ifindex, mac: d.mac, addrs: [...d.addrs] }));
  }

  ifindex(host: string, dev: string): number {
    const d = this.devices.get(host)?.find((x) => x.dev === dev);
    if (!d) throw new Error(`${host} has no interface ${dev}`);
    return d.ifindex;
  }

  mac(host: string, dev: string): string {
    const d = this.devices.get(host)?.find((x) => x.dev === dev);
    if (!d) throw new Error(`${host} has no interface ${dev}`);
    return d.mac;
  }

  /** Every address of `host` (without prefix length), optionally of one family or on the link towards `peer`. */
  addrs(host: string, family?: Family, peer?: string): string[] {
    this.ns(host);
    return this.devices
      .get(host)!
      .filter((d) => peer === undefined || d.peer === peer)
      .flatMap((d) => d.addrs)
      .map((a) => a.split('/')[0]!)
      .filter((a) => family === undefined || ipFamily(a) === family);
  }

  /** The first IPv4/IPv6 address of `host` (without prefix length), optionally on the link towards `peer`. */
  addr(host: string, family: Family, peer?: string): string {
    const a = this.addrs(host, family, peer)[0];
    if (!a) throw new Error(`${host} has no IPv${family} address${peer ? ` towards ${peer}` : ''}`);
    return a;
  }

  /** Inode of the namespace (stat of /run/netns/<name>), as /proc/<pid>/ns/net shows it. */
  netnsInode(host: string): number {
    const i = this.inodes.get(host);
    if (i === undefined) throw new Error(`no namespace for ${host} (yet)`);
    return i;
  }

  // -- processes ------------------------------------------------------------------------------

  private nsArgv(host: string, argv: readonly string[]): string[] {
    if (this.gone) throw new Error('topology destroyed');
    if (!argv.length) throw new Error('empty argv');
    return ['ip', 'netns', 'exec', this.ns(host), ...(SETPRIV ? [SETPRIV, '--pdeathsig', 'KILL', '--'] : []), ...argv];
  }

  /** Run argv in `host`'s namespace (`ip netns exec`) and wait for it; throws on a non-zero exit unless {check: false}. */
  async exec(host: string, argv: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return runTracked(this.nsArgv(host, argv), opts, this.procs);
  }

  /** Start a long-running child in `host`'s namespace; it is killed at teardown if still running. */
  spawn(host: string, argv: readonly string[], opts: SpawnOptions = {}): NsProcess {
    const p = new NsProcess(this.nsArgv(host, argv), opts);
    this.procs.add(p);
    void p.exited.then(() => this.procs.delete(p));
    return p;
  }

  // -- teardown -------------------------------------------------------------------------------

  /** Register a clean-up step; steps run last-registered first, after the tracked processes are
   *  stopped and before the namespaces are deleted. A failing step does not stop the others. */
  onDestroy(fn: () => unknown): void {
    if (this.destroying) throw new Error('topology is being destroyed');
    this.cleanups.push(fn);
  }

  get destroyed(): boolean {
    return this.gone;
  }

  /** Stop processes, run clean-up steps, delete the namespaces and the temp dir. Idempotent. */
  destroy(): Promise<void> {
    this.destroying ??= this.teardown();
    return this.destroying;
  }

  private async teardown(): Promise<void> {
    const errors: unknown[] = [];
    await Promise.all([...this.procs].map((p) => p.stop(1000)));
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (e) {
        errors.push(e);
      }
    }
    await Promise.all([...this.procs].map((p) => p.stop(1000))); // started by clean-up steps
    this.gone = true;
    const existing = this.namespaces.filter((n) => existsSync(join(NETNS_DIR, n)));
    if (existing.length) {
      try {
        await run(['ip', '-force', '-batch', '-'], { input: existing.map((n) => `netns del ${n}\n`).join('') });
      } catch (e) {
        errors.push(e);
      }
    }
    if (this.tmpdir) await rm(this.tmpdir, { recursive: true, force: true }).catch((e: unknown) => errors.push(e));
    live.delete(this);
    if (live.size === 0) uninstallHooks();
    if (errors.length === 1) throw errors[0];
    if (errors.length) throw new AggregateError(errors, `topology teardown: ${errors.length} errors`);
  }

  /** Last-resort teardown from the exit hook: nothing asynchronous can run any more. */
  destroySync(): void {
    for (const p of this.procs) p.signal('SIGKILL');
    for (const fn of this.cleanups.splice(0).reverse()) {
      try {
        const r = fn();
        if (r instanceof Promise)
          r.catch(() => {
            /* cannot be awaited at exit */
          });
      } catch {
        /* keep going */
      }
    }
    this.gone = true;
    const existing = this.namespaces.filter((n) => existsSync(join(NETNS_DIR, n)));
    if (existing.length)
      spawnSync('ip', ['-force', '-batch', '-'], {
        input: existing.map((n) => `netns del ${n}\n`).join(''),
        stdio: ['pipe', 'ignore', 'ignore'],
      });
    if (this.tmpdir) rmSync(this.tmpdir, { recursive: true, force: true });
    live.delete(this);
  }
}

/** Build a topology, run `fn` with it, and always tear it down. */
export async function withTopology<T>(decl: TopologyDecl, fn: (topo: Topology) => Promise<T>): Promise<T> {
  const topo = await Topology.create(decl);
  let result: T;
  try {
    result = await fn(topo);
  } catch (e) {
    await topo.destroy().catch(() => {
      /* report fn's error */
    });
    throw e;
  }
  await topo.destroy();
  return result;
}
