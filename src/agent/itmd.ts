#!/usr/bin/env node
// itmd: the agent of one network namespace. It hosts the user-space modules loaded there (one
// process each), runs the periodic functions (class-update, controller-update) of every module that
// has them, answers itmctl on a control socket and serves Prometheus metrics.
//
// Why a process per user module, not a worker thread: a module is researchers' code running over a
// native addon. In its own process a crash (a throw outside the per-packet guards, a fault in
// native code, memory exhaustion) or a stall ends only that module: the kernel closes its socket,
// its deadline passes, and its packets bypass it while the agent restarts it; the agent's own
// timers (other modules' periodic functions, the control socket) keep running. It can be pinned to
// a core and killed by its PID. The cost, some 40 MB per module and no shared heap, is small for a
// testbed, and packets never cross between processes anyway (each host has its own UMEM).
//
// The kernel keeps running what is pinned: killing the agent stops no kernel module (user modules
// bypass until an agent is back), and a new agent adopts whatever the records list.
import { fork } from 'node:child_process';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { u32 } from '../abi.js';
import { ItmError } from '../errors.js';
import { findModule } from '../catalog.js';
import { logLine } from '../log.js';
import { BpfMap, ifIndexToName, lockFile } from '../libbpf/index.js';
import type { Hook } from '../module-def.js';
import * as registry from '../registry/index.js';
import { AgentMetrics } from './metrics.js';
import { hasMaps, listDeviceRecords, hookPinDir, netnsId, withNamespaceLock, type ModuleRecord } from '../state.js';
import {
  AGENT_DIR,
  agentPaths,
  type AgentStatus,
  type HostedView,
  type PeriodicView,
  type Request,
  type Response,
  type UnloadResult,
} from './protocol.js';
import type { HostMessage, HostSpec } from './host.js';
import type { FleetOptions, Follower } from '../fleet/follower.js';

const HOST_JS = join(dirname(fileURLToPath(import.meta.url)), 'host.js');
const FOLLOW_RECORDS_MS = 1000;
const READY_TIMEOUT_MS = 15_000;

/** a line of itmd's own in its log */
const logItmd = (msg: string) => logLine('itmd', msg);

const keyOf = (ifindex: number, hook: Hook, name: string) => `${ifindex}/${hook}/${name}`;

/** What a host needs to serve a recorded user module. */
function hostSpec(ns: string, dev: string, ifindex: number, hook: Hook, m: ModuleRecord): HostSpec {
  return {
    name: m.name,
    dev,
    ifindex,
    hook,
    id: m.id,
    hookDir: hookPinDir(ifindex, hook, ns),
    source: m.source!,
    params: m.params,
    load: `itm-load ${ns}/${ifindex}/${hook}/${m.id}/${m.loadedAt}`,
  };
}

/** A host died: end its deadline now (the host is the deadline's only other writer, and it is gone). */
function onDeath(spec: HostSpec): void {
  try {
    const m = BpfMap.fromPin(join(spec.hookDir, 'itm_uctl'));
    try {
      const k = u32(spec.id);
      const v = m.lookup(k);
      if (v) {
        v.writeBigUInt64LE(0n, 0);
        m.update(k, v);
      }
    } finally {
      m.close();
    }
  } catch (e) {
    logItmd(`${spec.name}: cannot end its deadline: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** One user module's host process, restarted (with a growing pause) when it dies. */
class HostProcess {
  child?: ReturnType<typeof fork>;
  state: 'starting' | 'running' | 'restarting' | 'stopped' = 'starting';
  restarts = 0;
  lastExit?: string;
  private stopping = false;
  private timer?: NodeJS.Timeout;
  private startedAt = 0;
  /** what its periodic functions last reported */
  private periodic?: Omit<PeriodicView, 'name' | 'dev' | 'hook' | 'module'>;

  constructor(
    readonly spec: HostSpec,
    readonly module: string,
  ) {}

  /** Starts the process; resolves when it serves, rejects with why it could not. */
  start(): Promise<void> {
    this.state = 'starting';
    this.startedAt = Date.now();
    const child = fork(HOST_JS, [JSON.stringify(this.spec)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child = child;
    return new Promise((resolve, reject) => {
      let settled = false;
      const t = setTimeout(() => {
        if (settled) return;
        settled = true;
        child.kill('SIGKILL');
        reject(new ItmError(`${this.spec.name}: its host did not start within ${READY_TIMEOUT_MS / 1000} s`));
      }, READY_TIMEOUT_MS);
      child.on('message', (m: HostMessage) => {
        if (m.type === 'periodic') {
          this.periodic = { intervalMs: m.intervalMs, runs: m.runs, last: m.last };
          if (m.last.changed) logItmd(`${this.spec.name} on ${this.spec.dev}: ${m.last.changed}`);
          return;
        }
        if (settled) return;
        settled = true;
        clearTimeout(t);
        if (m.type === 'ready') {
          this.state = 'running';
          resolve();
        } else {
          reject(new ItmError(`${this.spec.name}: ${m.message}`));
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(t);
        this.lastExit = signal ? `killed by ${signal}` : `exit ${code}`;
        this.child = undefined;
        if (!settled) {
          settled = true;
          this.state = 'stopped';
          reject(new ItmError(`${this.spec.name}: its host exited while starting (${this.lastExit})`));
          return;
        }
        if (this.stopping) {
          this.state = 'stopped';
          return;
        }
        // died while serving: its packets bypass it from now on, not when its deadline passes
        onDeath(this.spec);
        this.restarts++;
        if (Date.now() - this.startedAt > 60_000) this.restarts = 1;
        const pause = Math.min(30_000, 1000 * 2 ** (this.restarts - 1));
        logItmd(`${this.spec.name} on ${this.spec.dev} ${this.spec.hook}: host ${this.lastExit}; restarting in ${pause / 1000} s`);
        this.state = 'restarting';
        this.timer = setTimeout(() => {
          this.start().catch((e: Error) => logItmd(`${this.spec.name}: restart failed: ${e.message}`));
        }, pause);
      });
    });
  }

  /** Stops the process (it drains and flushes); resolves when it is gone. */
  stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.timer);
    const child = this.child;
    if (!child) {
      this.state = 'stopped';
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }

  periodicView(): PeriodicView | undefined {
    const p = this.periodic;
    return p && { name: this.spec.name, dev: this.spec.dev, hook: this.spec.hook, module: this.module, ...p };
  }

  view(): HostedView {
    return {
      name: this.spec.name,
      dev: this.spec.dev,
      hook: this.spec.hook,
      module: this.module,
      state: this.state,
      ...(this.child?.pid ? { pid: this.child.pid } : {}),
      restarts: this.restarts,
      ...(this.lastExit ? { lastExit: this.lastExit } : {}),
    };
  }
}

/** The periodic functions of one module instance. */
/** An instance's periodic functions, run on a timer of their interval. */
class PeriodicTimer {
  runs = 0;
  last?: PeriodicView['last'];
  private timer?: NodeJS.Timeout;
  constructor(
    readonly run: registry.PeriodicInstance,
    readonly name: string,
    readonly dev: string,
  ) {
    this.timer = setInterval(() => this.tick(), run.intervalMs);
  }
  private tick(): void {
    try {
      this.last = this.run.tick();
      if (this.last.changed) logItmd(`${this.name} on ${this.dev}: ${this.last.changed}`);
    } catch (e) {
      this.last = { error: e instanceof Error ? e.message : String(e) };
    }
    this.runs++;
  }
  stop(): void {
    clearInterval(this.timer);
    this.run.close();
  }
  view(): PeriodicView {
    return {
      name: this.name,
      dev: this.dev,
      hook: this.run.hook,
      module: this.run.module,
      intervalMs: this.run.intervalMs,
      runs: this.runs,
      ...(this.last ? { last: this.last } : {}),
    };
  }
}

export class Agent {
  private readonly hosts = new Map<string, HostProcess>();
  private readonly periodic = new Map<string, PeriodicTimer>();
  /** instances whose periodic functions could not start: not retried every second */
  private readonly noPeriodic = new Set<string>();
  private server?: Server;
  private timer?: NodeJS.Timeout;
  private busy = Promise.resolve();
  private follower?: Follower;
  readonly startedAt = new Date().toISOString();
  readonly metrics: AgentMetrics;

  constructor(
    readonly ns: string,
    readonly metricsAddr?: string,
    readonly fleet?: FleetOptions,
  ) {
    this.metrics = new AgentMetrics(this.startedAt, () => this.hosts.values());
  }

  async start(): Promise<void> {
    const paths = agentPaths(this.ns);
    mkdirSync(AGENT_DIR, { recursive: true, mode: 0o700 });
    // one agent per namespace: the lock is held for the agent's life and released by the kernel
    try {
      lockFile(`${paths.pid}.lock`, 0);
    } catch {
      throw new ItmError(`an agent already runs in this network namespace (see ${paths.pid})`);
    }
    rmSync(paths.socket, { force: true });
    this.server = createServer((c) => this.serveConnection(c));
    await new Promise<void>((res, rej) => {
      this.server!.once('error', rej);
      this.server!.listen(paths.socket, () => res());
    });
    chmodSync(paths.socket, 0o600);
    writeFileSync(paths.pid, `${process.pid}\n`);
    if (this.metricsAddr) await this.metrics.serve(this.metricsAddr);
    await this.serialized(() => this.followRecords());
    this.timer = setInterval(() => {
      void this.serialized(() => this.followRecords()).catch((e: Error) => logItmd(`following the records: ${e.message}`));
    }, FOLLOW_RECORDS_MS);
    logItmd(`running (pid ${process.pid}, netns ${this.ns}${this.metricsAddr ? `, metrics on http://${this.metricsAddr}/metrics` : ''})`);
    if (this.fleet) {
      // the node's desired state from etcd; its loads come back to this agent over its socket,
      // like itmctl apply's, so they queue with the others
      const { Follower } = await import('../fleet/follower.js');
      this.follower = new Follower(this.fleet, logItmd);
      await this.follower.start();
    }
  }

  /** One change at a time: loads, unloads and following the records never interleave. */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.busy.then(fn, fn);
    this.busy = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }

  /** Hosts what the records list and nothing else: adopts at start, follows itmctl run without
   * the agent (unload, down) after. */
  private async followRecords(): Promise<void> {
    const want = new Map<string, { spec: HostSpec; module: string }>();
    const wantPeriodic = new Map<string, { name: string; dev: string; hook: Hook; module: string }>();
    const recs = withNamespaceLock(() => listDeviceRecords(this.ns), this.ns);
    for (const rec of recs) {
      const dev = ifIndexToName(rec.ifindex);
      if (!dev) continue;
      for (const [hook, hr] of Object.entries(rec.hooks) as Array<[Hook, NonNullable<(typeof rec.hooks)[Hook]>]>) {
        for (const m of hr.modules) {
          const key = keyOf(rec.ifindex, hook, m.name);
          if (m.kind === 'user' && m.source) {
            want.set(key, { module: m.module, spec: hostSpec(this.ns, dev, rec.ifindex, hook, m) });
          }
          // a kernel module's control plane runs here, also when its data path is a user one
          // keyed by what it runs with too: a reloaded instance (a new id) or one given new
          // parameters in place (registry.setParams) gets its functions anew
          if (hasMaps(m)) {
            wantPeriodic.set(`${key}#${m.id}#${JSON.stringify(m.params)}`, { name: m.name, dev, hook, module: m.module });
          }
        }
      }
    }
    for (const [key, h] of this.hosts) {
      const w = want.get(key);
      if (!w || w.spec.id !== h.spec.id) {
        this.hosts.delete(key);
        await h.stop();
      }
    }
    for (const [key, w] of want) {
      if (this.hosts.has(key)) continue;
      const h = new HostProcess(w.spec, w.module);
      this.hosts.set(key, h);
      logItmd(`hosting ${w.spec.name} (${w.module}) on ${w.spec.dev} ${w.spec.hook}`);
      h.start().catch((e: Error) => logItmd(`${w.spec.name}: ${e.message}`));
    }
    for (const [key, p] of this.periodic) {
      if (!wantPeriodic.has(key)) {
        p.stop();
        this.periodic.delete(key);
      }
    }
    for (const k of this.noPeriodic) if (!wantPeriodic.has(k)) this.noPeriodic.delete(k);
    for (const [key, w] of wantPeriodic) {
      if (this.periodic.has(key) || this.noPeriodic.has(key)) continue;
      try {
        const def = await findModule(w.module);
        if (!def.periodic) {
          this.noPeriodic.add(key);
          continue;
        }
        this.periodic.set(key, new PeriodicTimer(await registry.openPeriodic(w.name, w.dev, w.hook), w.name, w.dev));
      } catch (e) {
        this.noPeriodic.add(key);
        logItmd(`${w.name} on ${w.dev} ${w.hook}: no periodic functions (${e instanceof Error ? e.message : String(e)})`);
      }
    }
  }

  private async load(opts: registry.LoadOptions): Promise<registry.LoadResult> {
    const res = await registry.load(opts);
    const ifindex = registry.resolveDevice(opts.dev, 'load on');
    const rec = listDeviceRecords(this.ns).find((r) => r.ifindex === ifindex);
    // every instance the load made (one per hook of a hookSet) that runs in user space gets its
    // host now, so a host that cannot start fails the load, which is undone
    const loaded = [res, ...(res.others ?? [])];
    const started: Array<[string, HostProcess]> = [];
    try {
      for (const r of loaded) {
        const m = rec?.hooks[r.hook]?.modules.find((x) => x.id === r.id);
        if (m?.kind !== 'user' || !m.source) continue;
        const key = keyOf(ifindex, r.hook, m.name);
        const h = new HostProcess(hostSpec(this.ns, opts.dev, ifindex, r.hook, m), m.module);
        this.hosts.set(key, h);
        started.push([key, h]);
        await h.start();
        logItmd(`loaded ${m.name} (${m.module}) on ${opts.dev} ${r.hook}`);
      }
    } catch (e) {
      for (const [key, h] of started) {
        this.hosts.delete(key);
        await h.stop();
      }
      const name = opts.name ?? rec?.hooks[res.hook]?.modules.find((x) => x.id === res.id)?.name;
      for (const r of loaded) {
        try {
          if (name) registry.unload(name, opts.dev, r.hook);
          if (r.broughtUp) registry.down(opts.dev, [r.hook]);
        } catch {
          /* the host's error is the one to report */
        }
      }
      throw e;
    }
    // a kernel module's periodic functions (its control plane) start now, not at the next pass
    await this.followRecords();
    return res;
  }

  private async unload(name: string, dev: string, hook?: Hook): Promise<UnloadResult> {
    const ifindex = registry.resolveDevice(dev, `unload ${name} on`);
    // the host first: it stops taking packets, sends back those in flight and flushes
    for (const [key, h] of this.hosts) {
      if (h.spec.ifindex === ifindex && h.spec.name === name && (!hook || h.spec.hook === hook)) {
        this.hosts.delete(key);
        await h.stop();
      }
    }
    // without a hook, a module that one load put at several hooks (route) comes off them all
    const res = await registry.unloadInstance(name, dev, hook);
    // and a kernel module's control plane stops now (a user data path's)
    await this.followRecords();
    return res;
  }

  status(): AgentStatus {
    return {
      pid: process.pid,
      netns: this.ns,
      startedAt: this.startedAt,
      ...(this.metricsAddr ? { metrics: `http://${this.metricsAddr}/metrics` } : {}),
      hosts: [...this.hosts.values()].map((h) => h.view()),
      // a user module's periodic functions run in its host, which reports them
      periodic: [...this.periodic.values()].map((p) => p.view()).concat([...this.hosts.values()].flatMap((h) => h.periodicView() ?? [])),
      ...(this.follower ? { fleet: this.follower.status() } : {}),
    };
  }

  private async handle(req: Request): Promise<Response> {
    switch (req.op) {
      case 'status':
        return { ok: true, status: this.status() };
      case 'load':
        return { ok: true, load: await this.serialized(() => this.load(req.opts)) };
      case 'unload':
        return { ok: true, unload: await this.serialized(() => this.unload(req.name, req.dev, req.hook)) };
      case 'metrics':
        return { ok: true, metrics: await this.metrics.text() };
      case 'shutdown':
        setImmediate(() => void this.shutdown());
        return { ok: true };
      default:
        return { ok: false, error: `unknown request ${JSON.stringify((req as { op?: unknown }).op)}` };
    }
  }

  private serveConnection(c: Socket): void {
    let buf = '';
    c.on('error', () => undefined);
    c.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      let req: Request;
      try {
        req = JSON.parse(line) as Request;
      } catch {
        c.end(`${JSON.stringify({ ok: false, error: 'the request is not JSON' })}\n`);
        return;
      }
      this.handle(req).then(
        (r) => c.end(`${JSON.stringify(r)}\n`),
        (e: unknown) => {
          const r: Response =
            e instanceof ItmError
              ? { ok: false, error: e.message, ...(e.hint ? { hint: e.hint } : {}) }
              : { ok: false, error: e instanceof Error ? e.message : String(e) };
          if (!(e instanceof ItmError)) logItmd(`request ${req.op} failed: ${e instanceof Error ? e.stack : String(e)}`);
          c.end(`${JSON.stringify(r)}\n`);
        },
      );
    });
  }

  async shutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.follower?.stop();
    await this.busy;
    await Promise.all([...this.hosts.values()].map((h) => h.stop()));
    for (const p of this.periodic.values()) p.stop();
    this.server?.close();
    this.metrics.close();
    const paths = agentPaths(this.ns);
    rmSync(paths.socket, { force: true });
    rmSync(paths.pid, { force: true });
    logItmd('stopped');
    process.exit(0);
  }
}

const USAGE = `usage: itmd [--metrics host:port | --no-metrics] [--etcd URL[,URL...] --cluster NAME --node ID
            [--etcd-ca FILE] [--etcd-cert FILE --etcd-key FILE] [--etcd-user NAME [--etcd-password-file FILE]]]
  the itm agent of this network namespace (itmctl starts it when needed); with --etcd it keeps the
  node in step with its desired state in etcd, under /itm/<cluster>/ (ITM_ETCD_PASSWORD: the password)
`;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let metricsAddr: string | undefined = '127.0.0.1:9417';
  const fleet: Partial<FleetOptions> = {};
  const str: Record<string, (v: string) => void> = {
    '--metrics': (v) => (metricsAddr = v),
    '--etcd': (v) => (fleet.endpoints = v.split(',').filter(Boolean)),
    '--cluster': (v) => (fleet.cluster = v),
    '--node': (v) => (fleet.node = v),
    '--etcd-ca': (v) => (fleet.ca = v),
    '--etcd-cert': (v) => (fleet.cert = v),
    '--etcd-key': (v) => (fleet.key = v),
    '--etcd-user': (v) => (fleet.user = v),
    '--etcd-password-file': (v) => (fleet.passwordFile = v),
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const eq = a.indexOf('=');
    const flag = eq > 0 ? a.slice(0, eq) : a;
    if (str[flag]) {
      const v = eq > 0 ? a.slice(eq + 1) : args[++i];
      if (v === undefined) {
        process.stderr.write(`itmd: ${flag} needs a value\n`);
        process.exit(2);
      }
      str[flag](v);
    } else if (a === '--no-metrics') metricsAddr = undefined;
    else if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE);
      return;
    } else {
      process.stderr.write(`itmd: unknown argument ${a}\n`);
      process.exit(2);
    }
  }
  let fleetOpts: FleetOptions | undefined;
  try {
    if (Object.keys(fleet).length) {
      const { checkFleetOptions, clientOptions } = await import('../fleet/follower.js');
      fleetOpts = checkFleetOptions(fleet);
      await clientOptions(fleetOpts); // the files it names are readable
    }
  } catch (e) {
    process.stderr.write(`itmd: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(2);
  }
  const agent = new Agent(netnsId(), metricsAddr, fleetOpts);
  process.on('SIGTERM', () => void agent.shutdown());
  process.on('SIGINT', () => void agent.shutdown());
  try {
    await agent.start();
  } catch (e) {
    process.stderr.write(`itmd: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  }
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) void main();
