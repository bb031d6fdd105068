// The overlay's control plane, run by itmd as route's controller-update (itmBench's controller,
// with RON's probing). One controller per overlay (instance name) in a namespace, whatever devices
// the instance is loaded on: their maps are one (nodeMaps).
//
// Every probe interval it sends a probe to every destination node, directly when the node is a
// neighbour and through each other neighbour. A probe is an overlay packet (type 2, the CTL flag,
// this controller's sequence numbers) tagged with the next hop's key; a neighbour's kernel relays it
// like data. The destination's controller answers (type 3) back through the same hop. Per path:
// RTT (smoothed by 1/8) and loss (by 1/16); a path is dead after `dead_after` unanswered probes in
// a row, or at
// once when the underlay route to its first hop goes. The best live path per destination is written
// into route_best, where the kernel reads it for the next packet.
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { decode, encode, type BpfMap, type PeriodicContext } from '../../src/sdk.js';
import * as abi from './route.abi.js';
import { peerEntry, u32, underlayRoutes } from './peers.js';
import type { Neighbour, Topology } from './topology.js';
import { F_CTL, HDR_LEN, readHeader, seal, tagOk, Type } from './wire.js';

/** a probe's payload: its id, the neighbour it goes through (0: direct), when it left (ns) */
const PAYLOAD = 16;
/** another path is taken when it scores this much better, relatively and in µs, and when the last
 * change is this old (a loaded path slows its probes: traffic must not chase them back and forth) */
const SWITCH_RATIO = 0.75;
const SWITCH_US = 2000;
const HOLD_INTERVALS = 20;
/** loss is smoothed with this gain (over about 16 probes), and costs nothing up to LOSS_FREE */
const LOSS_GAIN = 1 / 16;
const LOSS_FREE = 0.1;
/** the underlay is reread when the kernel says a link, address or route changed, and at least this
 * often */
const UNDERLAY_MS = 5000;

export interface PathState {
  dest: number;
  /** the neighbour it goes through, 0 for the direct path */
  via: number;
  /** its first hop: `via`, or the destination itself */
  hop: number;
  srttUs?: number;
  /** lost probes, smoothed, 0..1 */
  loss: number;
  sent: number;
  answered: number;
  /** unanswered probes in a row */
  misses: number;
  lastAnswerNs: bigint;
  alive: boolean;
}

interface Pending {
  path: PathState;
  deadline: number;
}

const nowNs = (): bigint => process.hrtime.bigint();

export class Controller {
  readonly paths: PathState[] = [];
  /** destination node → next hop, as route_best has it */
  readonly best = new Map<number, number>();
  /** what went wrong with packets the socket received */
  readonly rejected = { malformed: 0, badTag: 0, unknown: 0 };
  error?: string;
  private readonly sock: dgram.Socket;
  private ready = false;
  private readonly pending = new Map<number, Pending>();
  private readonly instances = new Map<string, PeriodicContext>();
  private readonly changes: string[] = [];
  private readonly byWire: Map<number, Neighbour>;
  private readonly names = new Map<number, string>();
  private readonly underlay = new Map<number, string>();
  private readonly switchedAt = new Map<number, number>();
  /** destinations all of whose paths were dead (undefined), and since when paths live again */
  private readonly revived = new Map<number, number | undefined>();
  private seq = BigInt(Date.now()) * 1_000_000n;
  private nextId = 1;
  private soonTimer?: NodeJS.Timeout;
  private lastRefresh = 0;
  private readonly monitor: ChildProcess;
  private timer: NodeJS.Timeout;

  constructor(public t: Topology) {
    this.byWire = new Map();
    this.learn(t);
    this.sock = dgram.createSocket({ type: 'udp4' });
    this.sock.on('message', (m) => this.safely(() => this.receive(m)));
    this.sock.on('error', (e: NodeJS.ErrnoException) => {
      this.error =
        e.code === 'EADDRINUSE'
          ? `UDP port ${t.port} is taken (another controller of this overlay, or another overlay on its port?)`
          : e.message;
    });
    this.sock.bind(t.port, () => {
      this.ready = true;
    });
    this.timer = setInterval(() => this.safely(() => this.cycle()), t.probe.intervalMs);
    // the kernel tells of link, address and route changes: the underlay is reread at once (a
    // link without carrier is a dead path before any probe misses)
    this.monitor = spawn('ip', ['monitor', 'link', 'address', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
    this.monitor.on('error', () => {
      /* the periodic reread remains */
    });
    this.monitor.stdout?.on('data', () => {
      this.soonTimer ??= setTimeout(() => {
        this.soonTimer = undefined;
        this.refreshUnderlay();
      }, 10);
    });
  }

  /** The topology's neighbours, names and paths; a path this controller probed already keeps
   * its figures. */
  private learn(t: Topology): void {
    this.byWire.clear();
    for (const n of t.neighbours) this.byWire.set(n.wire, n);
    for (const n of t.neighbours) this.names.set(n.wire, n.id);
    for (const d of t.destinations) this.names.set(d.wire, d.node);
    this.names.set(t.wire, t.node);
    const had = new Map(this.paths.map((p) => [`${p.dest}/${p.via}`, p]));
    const paths: PathState[] = [];
    const dests = [...new Set(t.destinations.map((d) => d.wire).filter((w) => w !== t.wire))];
    for (const dest of dests) {
      const vias = [...(this.byWire.has(dest) ? [0] : []), ...t.neighbours.filter((n) => n.wire !== dest).map((n) => n.wire)];
      for (const via of vias) paths.push(had.get(`${dest}/${via}`) ?? this.newPath(dest, via));
    }
    this.paths.splice(0, this.paths.length, ...paths);
  }

  /**
   * Another view of the same overlay, while it runs (its topology given in place: registry
   * setParams, itmd --etcd): new neighbours and paths are probed from the next cycle, those gone
   * are forgotten (their probes in flight, their figures in route_paths, a next hop through one),
   * and the others keep what the probes found. The kernel's maps were brought in line already
   * (writeTopology).
   */
  retopologize(t: Topology): void {
    if (t === this.t || signature(t) === signature(this.t)) return;
    const before = new Set(this.t.neighbours.map((n) => n.id));
    const after = new Set(t.neighbours.map((n) => n.id));
    const interval = this.t.probe.intervalMs;
    this.t = t;
    this.learn(t);
    const live = new Set(this.paths);
    for (const [id, p] of this.pending) if (!live.has(p.path)) this.pending.delete(id);
    for (const [dest, hop] of this.best) if (!this.paths.some((p) => p.dest === dest && p.hop === hop)) this.best.delete(dest);
    for (const w of this.underlay.keys()) if (!this.byWire.has(w)) this.underlay.delete(w);
    if (this.instances.size) this.seedBest();
    if (t.probe.intervalMs !== interval) {
      clearInterval(this.timer);
      this.timer = setInterval(() => this.safely(() => this.cycle()), t.probe.intervalMs);
    }
    const added = [...after].filter((x) => !before.has(x));
    const gone = [...before].filter((x) => !after.has(x));
    this.changes.push(
      `topology ${t.file}: ${t.neighbours.length} neighbours${added.length ? `, added ${added.join(' ')}` : ''}${gone.length ? `, removed ${gone.join(' ')}` : ''}`,
    );
  }

  /** A timer's or the socket's work: what it throws is said in the controller's next report
   * (the agent logs it), never thrown into the agent, which it would end. The maps it reads and
   * writes go when the instances are unloaded, which can come between two of its cycles, before
   * the agent detaches them. */
  private safely(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      const said = `the control plane's cycle failed: ${e instanceof Error ? e.message : String(e)}`;
      if (!this.changes.includes(said)) this.changes.push(said);
    }
  }

  private newPath(dest: number, via: number): PathState {
    return { dest, via, hop: via || dest, loss: 0, sent: 0, answered: 0, misses: 0, lastAnswerNs: 0n, alive: false };
  }

  name(wire: number): string {
    return this.names.get(wire) ?? `#${wire}`;
  }

  /** An instance's periodic call: it is in use; what changed since the last report, once. */
  attach(ctx: PeriodicContext): string | undefined {
    const key = `${ctx.dev}/${ctx.hook}`;
    if (!this.instances.has(key)) {
      this.instances.set(key, ctx);
      if (this.instances.size === 1) this.seedBest();
    }
    if (this.error) throw new Error(this.error);
    if ([...this.instances.keys()][0] !== key || !this.changes.length) return undefined;
    return this.changes.splice(0).join('; ');
  }

  /** The instance goes; false when it was the last (the controller is closed). */
  detach(ctx: PeriodicContext): boolean {
    this.instances.delete(`${ctx.dev}/${ctx.hook}`);
    if (this.instances.size) return true;
    this.close();
    return false;
  }

  close(): void {
    clearInterval(this.timer);
    clearTimeout(this.soonTimer);
    this.monitor.kill();
    try {
      this.sock.close();
    } catch {
      /* closed already after an error */
    }
  }

  /** the maps, through whichever instance is still here (they share them) */
  private map(name: string): BpfMap | undefined {
    const [ctx] = this.instances.values();
    return ctx?.open(name);
  }

  /** what the kernel starts with (the topology's first choice, or an earlier controller's) */
  private seedBest(): void {
    // the figures of paths an earlier controller probed that this topology has no more
    const paths = this.map('route_paths');
    const mine = new Set(this.paths.map((p) => `${p.dest}/${p.via}`));
    for (const k of paths?.keys() ?? []) {
      const p = decode<abi.RoutePathKey>(abi.route_path_key, k);
      if (!mine.has(`${p.dest}/${p.via}`)) paths?.delete(k);
    }
    const best = this.map('route_best');
    for (const p of this.paths) {
      const v = best?.lookup(u32(p.dest));
      if (v) this.best.set(p.dest, v.readUInt32LE(0));
    }
  }

  private cycle(): void {
    if (!this.ready || !this.instances.size) return;
    const now = performance.now();
    for (const [id, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(id);
      this.missed(p.path);
    }
    for (const p of this.paths) this.probe(p);
    for (const dest of new Set(this.paths.map((p) => p.dest))) this.choose(dest);
    this.writePaths();
    if (now - this.lastRefresh >= UNDERLAY_MS) this.refreshUnderlay();
  }

  private probe(path: PathState): void {
    const hop = this.byWire.get(path.hop)!;
    const id = this.nextId++ >>> 0;
    const pkt = Buffer.alloc(HDR_LEN + PAYLOAD);
    pkt.writeUInt32BE(id, HDR_LEN);
    pkt.writeUInt32BE(path.via, HDR_LEN + 4);
    pkt.writeBigUInt64BE(nowNs(), HDR_LEN + 8);
    seal(
      pkt,
      { type: Type.Probe, flags: F_CTL, keyId: hop.keyId, from: this.t.wire, origin: this.t.wire, to: path.dest, seq: ++this.seq },
      hop.tag,
    );
    path.sent++;
    this.pending.set(id, { path, deadline: performance.now() + this.t.probe.timeoutMs });
    // an error (no route) shows as the probe's timeout
    this.sock.send(pkt, this.t.port, hop.address, () => {});
  }

  private receive(pkt: Buffer): void {
    const h = readHeader(pkt);
    if (!h || pkt.length < HDR_LEN + PAYLOAD || h.to !== this.t.wire || (h.type !== Type.Probe && h.type !== Type.Ack)) {
      this.rejected.malformed++;
      return;
    }
    // the kernel checked it on the way in (where route is loaded); so does this
    const from = this.byWire.get(h.from);
    if (!from) {
      this.rejected.unknown++;
      return;
    }
    if (from.keyId !== h.keyId || !tagOk(pkt, from.tag)) {
      this.rejected.badTag++;
      return;
    }
    if (h.type === Type.Probe) {
      // the answer goes back through the hop the probe came from
      const ack = Buffer.alloc(HDR_LEN + PAYLOAD);
      pkt.copy(ack, HDR_LEN, HDR_LEN, HDR_LEN + PAYLOAD);
      seal(
        ack,
        { type: Type.Ack, flags: F_CTL, keyId: from.keyId, from: this.t.wire, origin: this.t.wire, to: h.origin, seq: ++this.seq },
        from.tag,
      );
      this.sock.send(ack, this.t.port, from.address, () => {});
      return;
    }
    const id = pkt.readUInt32BE(HDR_LEN);
    const p = this.pending.get(id);
    if (!p || p.path.dest !== h.origin) return; // late (counted lost already) or not ours
    this.pending.delete(id);
    this.answered(p.path, Number(nowNs() - pkt.readBigUInt64BE(HDR_LEN + 8)) / 1000);
  }

  private answered(path: PathState, rttUs: number): void {
    if (!path.answered) path.loss = 0; // what went unanswered before the far end was there at all
    path.srttUs = path.srttUs === undefined ? rttUs : path.srttUs + (rttUs - path.srttUs) / 8;
    path.loss -= path.loss * LOSS_GAIN;
    path.misses = 0;
    path.answered++;
    path.lastAnswerNs = nowNs();
    if (!path.alive) {
      path.alive = true;
      this.changes.push(`${this.describe(path)} is up (${(rttUs / 1000).toFixed(2)} ms)`);
    }
  }

  private missed(path: PathState, why?: string): void {
    path.misses++;
    path.loss += (1 - path.loss) * LOSS_GAIN;
    if (path.alive && (why || path.misses >= this.t.probe.deadAfter)) {
      path.alive = false;
      this.changes.push(`${this.describe(path)} is dead (${why ?? `${path.misses} probes unanswered`})`);
    }
  }

  describe(path: PathState): string {
    return `${this.name(path.dest)} ${this.way(path)}`;
  }

  /** how a path goes: `direct`, or `via n1` */
  way(path: PathState): string {
    return path.via ? `via ${this.name(path.via)}` : 'direct';
  }

  /** a path's cost: its RTT, and a timeout for each lost probe beyond the first in ten (one lost
   * probe is no reason to move traffic) */
  private score(p: PathState): number {
    return (p.srttUs ?? 0) + Math.max(0, p.loss - LOSS_FREE) * this.t.probe.timeoutMs * 1000;
  }

  private choose(dest: number): void {
    const paths = this.paths.filter((p) => p.dest === dest);
    const live = paths.filter((p) => p.alive);
    if (!live.length) {
      this.revived.set(dest, undefined);
      return; // nothing better known: the kernel keeps what it has
    }
    // at the start, every path's first probe is answered or lost before any choice
    if (paths.some((p) => !p.answered && !p.misses)) return;
    // when every path was dead (the destination's node was down, say), the first to answer again
    // is not the best for that: the others get a probe timeout to answer too
    if (this.revived.has(dest)) {
      const since = this.revived.get(dest) ?? performance.now();
      this.revived.set(dest, since);
      if (live.length < paths.length && performance.now() - since < this.t.probe.timeoutMs) return;
      this.revived.delete(dest);
    }
    const curHop = this.best.get(dest);
    const cur = paths.find((p) => p.hop === curHop);
    const min = live.reduce((a, b) => (this.score(b) < this.score(a) ? b : a));
    const clearlyBetter = (a: PathState, b: PathState) =>
      this.score(a) < this.score(b) * SWITCH_RATIO && this.score(b) - this.score(a) > SWITCH_US;
    // equal paths settle on one choice, the same every time: the first path (in the topology's
    // order) that is not clearly worse than the best
    const first = live.find((p) => !clearlyBetter(min, p)) ?? min;
    let top = first;
    if (cur?.alive) {
      // a live path is left only after the hold (traffic must not chase probes back and forth):
      // for one clearly better, or, among equals, for the first (where a transient loss, at the
      // start or under load, had sent traffic elsewhere)
      if (performance.now() - (this.switchedAt.get(dest) ?? -Infinity) < HOLD_INTERVALS * this.t.probe.intervalMs) return;
      if (clearlyBetter(min, cur)) top = clearlyBetter(first, cur) ? first : min;
      else if (paths.indexOf(first) >= paths.indexOf(cur)) return;
    }
    if (cur === top) return;
    this.switchedAt.set(dest, performance.now());
    this.best.set(dest, top.hop);
    this.map('route_best')?.update(u32(dest), u32(top.hop));
    const fmt = (p: PathState) => `${(this.score(p) / 1000).toFixed(2)} ms`;
    this.changes.push(
      `${this.name(dest)}: now ${this.way(top)} (${fmt(top)}${cur ? `; was ${this.way(cur)}, ${cur.alive ? fmt(cur) : 'dead'}` : ''})`,
    );
  }

  private writePaths(): void {
    const m = this.map('route_paths');
    if (!m) return;
    for (const p of this.paths) {
      m.update(
        encode(abi.route_path_key, { dest: p.dest, via: p.via }),
        encode(abi.route_path, {
          rtt_us: Math.round(p.srttUs ?? 0),
          loss_pm: Math.round(p.loss * 1000),
          sent: p.sent >>> 0,
          answered: p.answered >>> 0,
          last_answer_ns: p.lastAnswerNs,
          alive: p.alive ? 1 : 0,
          in_use: this.best.get(p.dest) === p.hop ? 1 : 0,
          pad: Buffer.alloc(6),
        }),
      );
    }
  }

  /** Follows the underlay: a neighbour's route may move to another device, or go. */
  private refreshUnderlay(): void {
    this.lastRefresh = performance.now();
    try {
      const ns = this.t.neighbours;
      const routes = underlayRoutes(ns.map((n) => n.address));
      const peers = this.map('route_peers');
      if (!peers) return;
      const lost = new Set<number>();
      ns.forEach((n, i) => {
        const u = routes[i];
        const key = JSON.stringify(u ?? null);
        const was = this.underlay.get(n.wire);
        if (was === key) return;
        this.underlay.set(n.wire, key);
        peers.update(u32(n.wire), peerEntry(n, u));
        if (was === undefined) return; // the first look: init wrote the same
        this.changes.push(u ? `${n.id}: underlay now through ${u.dev} from ${u.src}` : `${n.id}: no underlay route to ${n.address}`);
        if (!u)
          for (const p of this.paths)
            if (p.hop === n.wire) {
              this.missed(p, `no underlay route to ${n.id}`);
              lost.add(p.dest);
            }
      });
      // the kernel would drop what goes to a hop without a route: choose again now
      for (const d of lost) this.choose(d);
      if (lost.size) this.writePaths();
    } catch (e) {
      this.changes.push(`cannot read the underlay routes: ${(e as Error).message}`);
    }
  }
}

/** What a topology says, to tell another from the same one read again (each module instance
 * may hold its own copy of it) */
const signature = (t: Topology): string =>
  JSON.stringify([
    t.file,
    t.node,
    t.port,
    t.neighbours.map((n) => [n.id, n.address, n.also, n.key.toString('hex'), n.keyId, n.slot]),
    t.destinations.map((d) => [d.prefix.text, d.node]),
    t.probe,
  ]);

const controllers = new Map<string, Controller>();

/** The controller of an overlay instance, started by its first periodic call. */
export function controllerFor(ctx: PeriodicContext, t: Topology): Controller {
  let c = controllers.get(ctx.name);
  // another node or port is another controller (its instances are reloaded, not reconfigured)
  if (c && (c.t.node !== t.node || c.t.port !== t.port)) {
    c.close();
    controllers.delete(ctx.name);
    c = undefined;
  }
  // a topology given in place; while an apply gives it instance by instance, the last one asked
  // for holds (the paths both have keep their figures)
  c?.retopologize(t);
  if (!c) {
    c = new Controller(t);
    controllers.set(ctx.name, c);
  }
  return c;
}

export function stopController(ctx: PeriodicContext): void {
  const c = controllers.get(ctx.name);
  if (c && !c.detach(ctx)) controllers.delete(ctx.name);
}
