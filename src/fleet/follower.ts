// itmd --etcd: keeps the node in step with a cluster's desired state in etcd. Under the prefix
// `/itm/<cluster>/`:
//   nodes/<id>       a node's document (a node file, as `itmctl apply` reads it)
//   overlays/<name>  an overlay, defined once for all its members (modules/route/overlay.ts)
//   status/<id>      what the node publishes: its state and the revision it applied, under a
//                    lease, so that the key goes when the node does (its liveness)
//
// It reads the prefix whole, then watches it; each change makes a plan from the node's state to
// the desired one and carries it out all or nothing (src/apply), so that what a change asks of a
// running instance in place (a qos threshold, a route topology) is done in place. etcd is not on
// the data path: when it is unreachable the node keeps what it applied last and goes on; when it
// is back, the prefix is read whole again and whatever changed meanwhile is applied. A value that
// does not pass its checks is refused (one line in the log and in the status) and its last good
// value is kept; a state that cannot be applied changes nothing. Keys are never logged.
import { readFileSync } from 'node:fs';
import type { Etcd3, IOptions, Lease, Watcher } from 'etcd3';
import type { Overlay } from '../../modules/route/overlay.js';
import { describePlan, executePlan, nodeState, planApply } from '../apply/index.js';
import { ItmError } from '../errors.js';
import { checkOverlay, desiredState, pruneViews, slotsOf } from './desired.js';

export interface FleetOptions {
  /** etcd's client URLs (http:// or https://) */
  endpoints: string[];
  cluster: string;
  node: string;
  /** TLS: the CA that signed etcd's certificate, and this client's certificate and key */
  ca?: string;
  cert?: string;
  key?: string;
  /** etcd's password authentication: the user, and a file holding the password */
  user?: string;
  passwordFile?: string;
  /** the status key's lease, in seconds */
  leaseTtl?: number;
}

export interface FleetStatus {
  endpoints: string[];
  cluster: string;
  node: string;
  connected: boolean;
  /** when it last connected or disconnected (ISO 8601) */
  since: string;
  /** the store's revision the node's state was last made from */
  revision?: number;
  applied?: { revision: number; at: string; changes: number };
  /** nothing to apply: why (no node document yet) */
  waiting?: string;
  /** the last value or state refused, and why */
  refused?: { key: string; reason: string; at: string };
}

const HEALTH_MS = 1000;
const CALL_MS = 2000;
const DEBOUNCE_MS = 20;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** The etcd client's options: TLS and auth from files, and fault handling that leaves retrying
 * to the follower (which reads everything again when etcd is back). */
export async function clientOptions(o: FleetOptions): Promise<IOptions> {
  const { noop, ExponentialBackoff } = await import('cockatiel');
  const read = (what: string, f: string) => {
    try {
      return readFileSync(f);
    } catch (e) {
      throw new ItmError(`cannot read the etcd ${what} ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  };
  const opts: IOptions = {
    hosts: o.endpoints,
    dialTimeout: CALL_MS,
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_MS }),
    faultHandling: { host: () => noop, global: noop, watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 1000 }).next() },
  };
  if (o.ca || o.cert || o.key) {
    if (!o.ca) throw new ItmError('an etcd client certificate needs the CA too (--etcd-ca)');
    if (!o.cert !== !o.key)
      throw new ItmError('an etcd client certificate needs its key, and a key its certificate (--etcd-cert, --etcd-key)');
    opts.credentials = {
      rootCertificate: read('CA', o.ca),
      ...(o.cert ? { certChain: read('certificate', o.cert), privateKey: read('key', o.key!) } : {}),
    };
  }
  if (o.user) {
    const password = o.passwordFile ? read('password file', o.passwordFile).toString().trim() : process.env.ITM_ETCD_PASSWORD;
    if (password === undefined) throw new ItmError('etcd auth needs a password: --etcd-password-file FILE, or ITM_ETCD_PASSWORD');
    opts.auth = { username: o.user, password };
  }
  return opts;
}

/** Checks the options as given on itmd's command line. */
export function checkFleetOptions(o: Partial<FleetOptions>): FleetOptions {
  if (!o.endpoints?.length) throw new ItmError('--etcd needs a URL (http://host:2379; several comma-separated)');
  for (const e of o.endpoints)
    if (!/^https?:\/\/[^/]+$/.test(e)) throw new ItmError(`--etcd: '${e}' is not a URL like http://10.0.0.1:2379`);
  if (!o.cluster || !NAME.test(o.cluster)) throw new ItmError('--cluster NAME is needed with --etcd (letters, digits, ., - and _)');
  if (!o.node || !NAME.test(o.node)) throw new ItmError('--node ID is needed with --etcd (letters, digits, ., - and _)');
  return o as FleetOptions;
}

export class Follower {
  private client?: Etcd3;
  private watcher?: Watcher;
  private lease?: Lease;
  private readonly prefix: string;
  /** the values read, as they are; overlays also as they last passed their checks */
  private readonly values = new Map<string, { text: string; rev: number }>();
  private readonly overlays = new Map<string, { o: Overlay; text: string }>();
  private readonly refusedValues = new Map<string, string>();
  private revision = 0;
  private connected = false;
  private since = new Date().toISOString();
  private applied?: FleetStatus['applied'];
  private waiting?: string;
  private refused?: FleetStatus['refused'];
  private timer?: NodeJS.Timeout;
  private soon?: NodeJS.Timeout;
  private running?: Promise<void>;
  private again = false;
  private stopped = false;
  private checking = false;
  /** the view directory in use (kept when older ones are removed) */
  private viewDir?: string;

  constructor(
    readonly o: FleetOptions,
    private readonly say: (line: string) => void,
  ) {
    this.prefix = `/itm/${o.cluster}/`;
  }

  private get statusKey(): string {
    return `${this.prefix}status/${this.o.node}`;
  }

  async start(): Promise<void> {
    const { Etcd3 } = await import('etcd3');
    this.client = new Etcd3(await clientOptions(this.o));
    this.say(`fleet: following ${this.prefix} on ${this.o.endpoints.join(', ')} as node ${this.o.node}`);
    this.timer = setInterval(() => void this.check(), HEALTH_MS);
    await this.check();
  }

  /** Whether etcd answers; when it comes back, everything is read again. */
  private async check(): Promise<void> {
    if (this.checking || this.stopped || !this.client) return;
    this.checking = true;
    try {
      if (!this.connected) await this.connect();
      else await this.client.maintenance.status();
    } catch (e) {
      this.disconnected(e);
    } finally {
      this.checking = false;
    }
  }

  private async connect(): Promise<void> {
    const c = this.client!;
    const all = await c.getAll().prefix(this.prefix).exec();
    const header = Number(all.header.revision);
    const seen = new Set<string>();
    this.revision = 0;
    for (const kv of all.kvs) {
      const key = kv.key.toString();
      if (key.startsWith(`${this.prefix}status/`)) continue;
      seen.add(key);
      this.revision = Math.max(this.revision, Number(kv.mod_revision));
      this.take(key, kv.value.toString(), Number(kv.mod_revision));
    }
    for (const key of [...this.values.keys()]) if (!seen.has(key)) this.drop(key);
    await this.watcher?.cancel().catch(() => undefined);
    const w = await c
      .watch()
      .prefix(this.prefix)
      .startRevision(String(header + 1))
      .create();
    this.watcher = w;
    // the nodes' status keys (this one's too) change nothing here
    const ours = (key: string) => !key.startsWith(`${this.prefix}status/`);
    w.on('put', (kv) => {
      const key = kv.key.toString();
      if (!ours(key)) return;
      this.revision = Math.max(this.revision, Number(kv.mod_revision));
      if (this.take(key, kv.value.toString(), Number(kv.mod_revision))) this.schedule();
    });
    w.on('delete', (kv) => {
      const key = kv.key.toString();
      if (!ours(key)) return;
      this.revision = Math.max(this.revision, Number(kv.mod_revision));
      this.drop(key);
      this.schedule();
    });
    w.on('disconnected', (e) => this.disconnected(e));
    w.on('error', (e) => this.disconnected(e));
    this.connected = true;
    this.since = new Date().toISOString();
    this.say(`fleet: connected to etcd (revision ${header}): ${seen.size} keys under ${this.prefix}`);
    await this.grantLease();
    this.schedule();
  }

  private disconnected(e: unknown): void {
    if (!this.connected || this.stopped) return;
    this.connected = false;
    this.since = new Date().toISOString();
    const why = e instanceof Error ? e.message.split('\n')[0] : String(e);
    this.say(
      `fleet: disconnected from etcd (${why}); keeping the state applied last${this.applied ? ` (revision ${this.applied.revision})` : ''}`,
    );
    void this.watcher?.cancel().catch(() => undefined);
    this.watcher = undefined;
  }

  /** The status key, under a lease of its own: when the node goes, so does the key. */
  private async grantLease(): Promise<void> {
    const lease = this.client!.lease(this.o.leaseTtl ?? 10, { autoKeepAlive: true });
    lease.on('lost', () => {
      if (this.lease === lease) this.lease = undefined;
    });
    lease.on('keepaliveFailed', () => undefined);
    await lease.grant();
    const old = this.lease;
    this.lease = lease;
    old?.release();
    await this.publish();
  }

  private async publish(): Promise<void> {
    if (!this.connected || !this.lease) return;
    const v = {
      node: this.o.node,
      pid: process.pid,
      at: new Date().toISOString(),
      ...(this.applied ? { applied: this.applied } : {}),
      ...(this.waiting ? { waiting: this.waiting } : {}),
      ...(this.refused ? { refused: this.refused } : {}),
    };
    try {
      await this.lease.put(this.statusKey).value(JSON.stringify(v)).exec();
    } catch (e) {
      this.disconnected(e);
    }
  }

  /** A value read: an overlay is checked alone (a bad one keeps its last good value). Whether it
   * is one that may change the node's state. */
  private take(key: string, text: string, rev: number): boolean {
    const rel = key.slice(this.prefix.length);
    if (rel.startsWith('status/')) return false;
    if (this.values.get(key)?.text === text) return false;
    this.values.set(key, { text, rev });
    if (!rel.startsWith('overlays/')) return true;
    const name = rel.slice('overlays/'.length);
    try {
      this.overlays.set(name, { o: checkOverlay({ key, text }, name), text });
      this.refusedValues.delete(key);
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      this.refusedValues.set(key, reason);
      this.refuse(key, `${reason}${this.overlays.has(name) ? '; its last good value is kept' : ''}`);
    }
    return true;
  }

  private drop(key: string): void {
    this.values.delete(key);
    this.refusedValues.delete(key);
    const rel = key.slice(this.prefix.length);
    if (rel.startsWith('overlays/')) this.overlays.delete(rel.slice('overlays/'.length));
  }

  private refuse(key: string, reason: string): void {
    if (this.refused?.key === key && this.refused.reason === reason) return; // said already
    this.refused = { key, reason, at: new Date().toISOString() };
    this.say(`fleet: refused ${key}: ${reason}`);
  }

  private schedule(): void {
    clearTimeout(this.soon);
    this.soon = setTimeout(() => void this.sync(), DEBOUNCE_MS);
  }

  /** One apply at a time; a change while one runs is applied after it. */
  private async sync(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.applyOnce();
      } while (this.again && !this.stopped);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async applyOnce(): Promise<void> {
    const revision = this.revision;
    const docKey = `${this.prefix}nodes/${this.o.node}`;
    const doc = this.values.get(docKey);
    if (!doc) {
      const w = `no desired state: put a node document at ${docKey}`;
      if (this.waiting !== w) this.say(`fleet: ${w}`);
      this.waiting = w;
      await this.publish();
      return;
    }
    this.waiting = undefined;
    try {
      const current = await nodeState();
      // each overlay's neighbours keep the slots of the view the node runs now
      const running = new Map(current.devices.flatMap((d) => d.instances).map((i) => [i.name, i]));
      const slots = (name: string) => {
        const i = running.get(name);
        return i?.module === 'route' && typeof i.params.topology === 'string' ? slotsOf(i.params.topology) : new Map<string, number>();
      };
      const overlays = new Map([...this.overlays].map(([n, v]) => [n, v.o]));
      const { state, dir } = await desiredState(this.o.cluster, this.o.node, { key: docKey, text: doc.text }, overlays, slots);
      const plan = planApply(state, current);
      const lines = describePlan(plan);
      if (lines.length) {
        await executePlan(plan);
        this.say(`fleet: applied revision ${revision}: ${lines.join('; ')}`);
      }
      this.viewDir = dir;
      pruneViews(this.o.cluster, this.o.node, [dir]);
      this.applied = { revision, at: new Date().toISOString(), changes: lines.length };
      if (this.refused && !this.refusedValues.has(this.refused.key)) this.refused = undefined;
    } catch (e) {
      const reason = e instanceof Error ? e.message : String(e);
      this.refuse(docKey, `${reason}; nothing was changed`);
      if (this.viewDir) pruneViews(this.o.cluster, this.o.node, [this.viewDir]);
    }
    await this.publish();
  }

  status(): FleetStatus {
    return {
      endpoints: this.o.endpoints,
      cluster: this.o.cluster,
      node: this.o.node,
      connected: this.connected,
      since: this.since,
      ...(this.revision ? { revision: this.revision } : {}),
      ...(this.applied ? { applied: this.applied } : {}),
      ...(this.waiting ? { waiting: this.waiting } : {}),
      ...(this.refused ? { refused: this.refused } : {}),
    };
  }

  /** Stops following; the status key goes with its lease. The node keeps its state. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.soon);
    await this.running;
    await this.watcher?.cancel().catch(() => undefined);
    if (this.connected) await this.lease?.revoke().catch(() => undefined);
    this.lease?.release();
    this.client?.close();
  }
}
