// The host of one user-space module: a process of its own, started by itmd (see agent/itmd.ts for
// why a process and not a worker thread). It binds an AF_XDP socket to the far end of the module's
// veth pair, takes the diverted packets in batches, runs the module's classify → log → process on
// each, and sends back what it accepts, checksums completed, for the dispatcher to resume the
// chain. While it runs it renews its deadline in the dispatcher's itm_uctl map; when it stops (or
// stalls, or dies) the deadline passes and packets go past the module instead of being lost.
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import * as abi from '../abi.js';
import { resolveModule } from '../catalog.js';
import { ItmError } from '../errors.js';
import { RateLimitedLog } from '../log.js';
import { FRAME_SIZE, RX_RING, TRAILER_SIZE, pairNames } from '../divert.js';
import { ModuleInstance, instanceDir } from '../instance.js';
import { BpfError, BpfMap, XskSocket, ifNameToIndex } from '../libbpf/index.js';
import {
  hostFunctions,
  isUserModule,
  type Hook,
  type ParamValue,
  type Periodic,
  type PeriodicContext,
  type UserContext,
  type UserFunctions,
} from '../module-def.js';
import { PacketView, type Room } from '../user/packet.js';

export interface HostSpec {
  name: string;
  dev: string;
  ifindex: number;
  hook: Hook;
  id: number;
  /** the hook's pin directory */
  hookDir: string;
  /** UserContext.load */
  load: string;
  /** the file of the module's declaration */
  source: string;
  params: Record<string, ParamValue>;
}

/** what a module's periodic functions did last (see PeriodicView) */
export interface PeriodicResult {
  classes?: Record<string, number | string>;
  changed?: string;
  error?: string;
}

/** messages to the agent */
export type HostMessage =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'periodic'; intervalMs: number; runs: number; last: PeriodicResult };

const BATCH = 256;
const DEADLINE_NS = 500_000_000n;
const RENEW_MS = 100;
const STATS_MS = 250;

const u32 = abi.u32;
/** the instance whose user data path this is, for a kernel module's (one host a process): its
 * maps, by UserContext.open */
let instance: ModuleInstance | undefined;
const T_FLAGS = abi.itm_trailer.fields.find((f) => f.name === 'flags')!.offset;
/** with ITM_T_REDIRECT, the trailer's iif names the device to send the packet out of */
const T_OUT = abi.itm_trailer.fields.find((f) => f.name === 'iif')!.offset;
const now = () => process.hrtime.bigint();

function tellAgent(m: HostMessage): void {
  if (process.send) process.send(m);
}

export class ModuleHost {
  private running = true;
  private readonly stats = {
    received: 0n,
    accepted: 0n,
    modified: 0n,
    dropped: 0n,
    errors: 0n,
    malformed: 0n,
    classes: new Array<bigint>(abi.ITM_CLASS_BUCKETS).fill(0n),
  };
  private gone = 0n;
  private uctlVal!: Buffer;
  private readonly errs: RateLimitedLog;
  /** the periodic functions this process runs: a user-space module's (a kernel module's run in
   * itmd, also when this is its user data path) */
  private readonly periodicFns: Periodic | undefined;
  private periodicRuns = 0;

  private constructor(
    readonly spec: HostSpec,
    /** the per-packet functions: a user-space module's, or a kernel module's user data path */
    readonly fns: UserFunctions,
    periodic: Periodic | undefined,
    readonly ctx: UserContext,
    private readonly sock: XskSocket,
    private readonly uctl: BpfMap,
    private readonly uflight: BpfMap,
    private readonly xsks: BpfMap,
    private readonly ustats: BpfMap,
  ) {
    this.errs = new RateLimitedLog(`itm module ${spec.name} (${spec.dev} ${spec.hook})`);
    this.periodicFns = periodic;
  }

  static async start(spec: HostSpec): Promise<ModuleHost> {
    const { def } = await resolveModule(spec.source);
    const modDir = instanceDir(spec.hookDir, spec.id);
    instance = new ModuleInstance(modDir);
    const inst = instance;
    const ctx: UserContext = { name: spec.name, dev: spec.dev, hook: spec.hook, load: spec.load, params: spec.params, state: {} };
    // the user data path of a kernel module: its object's maps, pinned at the load
    if (!isUserModule(def)) ctx.open = (map) => inst.open(map);
    const fns = hostFunctions(def, spec.params);
    if (!fns) throw new ItmError(`${spec.name}: this load of ${def.name} runs in the kernel, not in a host`);
    const uctl = BpfMap.fromPin(join(spec.hookDir, 'itm_uctl'));
    const uflight = BpfMap.fromPin(join(spec.hookDir, 'itm_uflight'));
    const xsks = BpfMap.fromPin(join(modDir, 'xsks'));
    const ustats = BpfMap.fromPin(join(modDir, 'ustats'));
    await fns.start?.(ctx);
    const b = ifNameToIndex(pairNames(spec.ifindex, spec.hook, spec.id).b);
    let sock: XskSocket | undefined;
    // a socket closed a moment ago (a host that just died) keeps the queue busy briefly
    for (let i = 0; !sock; i++) {
      try {
        sock = XskSocket.create({ ifindex: b, frames: 2 * RX_RING, frameSize: FRAME_SIZE, rxSize: RX_RING, txSize: RX_RING });
      } catch (e) {
        if (!(e instanceof BpfError && e.code === 'EBUSY') || i >= 40) throw e;
        await sleep(50);
      }
    }
    const host = new ModuleHost(spec, fns, isUserModule(def) ? def.periodic : undefined, ctx, sock, uctl, uflight, xsks, ustats);
    host.serve();
    return host;
  }

  private uflightNow(): abi.ItmUflight {
    return abi.decode<abi.ItmUflight>(abi.itm_uflight, this.uflight.lookup(u32(this.spec.id))!);
  }

  private writeUctl(deadline: bigint): void {
    this.uctlVal.writeBigUInt64LE(deadline, 0);
    this.uctlVal.writeBigUInt64LE(this.gone, 8);
    this.uctl.update(u32(this.spec.id), this.uctlVal);
  }

  /** Starts serving: what an earlier host left in flight is written off, then the socket goes in
   * the XSKMAP and the deadline is set. */
  private serve(): void {
    this.uctlVal = this.uctl.lookup(u32(this.spec.id))!;
    const fl = this.uflightNow();
    this.gone = fl.sent - fl.back;
    this.xsks.update(u32(0), u32(this.sock.fd));
    this.writeUctl(now() + DEADLINE_NS);
  }

  private writeStats(): void {
    const s = this.stats;
    this.ustats.update(u32(0), abi.encode(abi.itm_ustats, { ...s }));
  }

  // one batch's buffers, allocated once
  private readonly rxAddrs = new Uint32Array(BATCH);
  private readonly rxLens = new Uint32Array(BATCH);
  private readonly txAddrs = new Uint32Array(BATCH);
  private readonly txLens = new Uint32Array(BATCH);
  private readonly dropped = new Uint32Array(BATCH);
  private readonly scratch = Buffer.alloc(FRAME_SIZE);
  private readonly trailer = Buffer.alloc(TRAILER_SIZE);
  /** when the loop last renewed the deadline, wrote the stats, received, ran the periodic functions */
  private readonly last = { renew: 0, stats: 0, rx: Date.now(), periodic: Date.now(), sent: -1n };

  /** The receive loop; resolves when stop() was called and the packets in flight came back. */
  async run(): Promise<void> {
    let drainUntil = 0;
    for (;;) {
      const t = Date.now();
      if (!this.running && drainUntil === 0) {
        // no new packets: the deadline goes; the ones already sent still come in for a moment
        this.writeUctl(0n);
        drainUntil = t + 200;
      }
      if (drainUntil && t > drainUntil) break;
      this.housekeeping(t);
      const n = this.sock.receiveInto(this.rxAddrs, this.rxLens);
      if (n === 0) {
        this.sock.reclaim();
        await this.sock.wait(20);
        continue;
      }
      this.last.rx = t;
      await this.transmit(this.serveBatch(n));
    }
    this.xsks.delete(u32(0));
    this.writeUctl(0n);
    this.writeStats();
  }

  /** What the loop does besides packets: in the loop, not on timers, which steady traffic would
   * never let run. */
  private housekeeping(t: number): void {
    const last = this.last;
    if (this.running && t - last.renew >= RENEW_MS) {
      this.writeUctl(now() + DEADLINE_NS);
      last.renew = t;
    }
    const every = this.periodicFns;
    if (every && this.running && t - last.periodic >= every.intervalMs) {
      this.periodic(every);
      last.periodic = t;
    }
    if (t - last.stats >= STATS_MS) {
      this.writeStats();
      last.stats = t;
      // packets lost on the way (never received, never back): written off once the module has
      // been idle a while and nothing new was sent
      if (t - last.rx > 500) {
        const fl = this.uflightNow();
        if (fl.sent === last.sent && fl.sent - fl.back > this.gone) this.gone = fl.sent - fl.back;
        last.sent = fl.sent;
      }
    }
  }

  /** The module on the `n` packets received: the ones that go back are queued for transmit (their
   * count returned), the dropped ones' frames released. */
  private serveBatch(n: number): number {
    const umem = this.sock.umem;
    const trailer = this.trailer;
    // at xdp the trailer comes as metadata, just before the packet (see divert() in
    // bpf/dispatcher/user.h); at tc it is behind the packet. It goes back behind the packet, which
    // the module may have grown or shrunk at its front (insert, remove): its end stays put.
    const trailerInFront = this.spec.hook === 'xdp';
    let nt = 0,
      nr = 0;
    for (let i = 0; i < n; i++) {
      const addr = this.rxAddrs[i]!,
        len = this.rxLens[i]!;
      const plen = trailerInFront ? len : len - TRAILER_SIZE;
      const at = trailerInFront ? addr - TRAILER_SIZE : addr + plen;
      umem.copy(trailer, 0, at, at + TRAILER_SIZE);
      const out = this.handle(umem.subarray(addr, addr + plen), { buf: umem, start: addr - (addr % FRAME_SIZE) }, this.scratch);
      if (!out) {
        this.dropped[nr++] = addr;
        continue;
      }
      const start = out.data.byteOffset - umem.byteOffset,
        end = start + out.data.length;
      if (out.out) {
        trailer[T_FLAGS] = trailer[T_FLAGS]! | abi.ITM_T_REDIRECT;
        trailer.writeUInt32LE(out.out, T_OUT);
      }
      trailer.copy(umem, end);
      this.txAddrs[nt] = start;
      this.txLens[nt++] = end - start + TRAILER_SIZE;
    }
    this.gone += BigInt(nr);
    if (nr) this.sock.release(this.dropped.subarray(0, nr));
    return nt;
  }

  /** Sends the `nt` queued packets back, waiting for room in the ring when it is full. */
  private async transmit(nt: number): Promise<void> {
    let sent = 0;
    while (sent < nt) {
      const k = this.sock.transmit(this.txAddrs.subarray(sent, nt), this.txLens.subarray(sent, nt));
      sent += k;
      if (sent < nt) {
        this.sock.reclaim();
        if (k === 0) await sleep(0);
      }
    }
    this.sock.reclaim();
  }

  /** One packet, `frame` in `room`: what to send back (the packet where it now stands, and the
   * device to send it out of, if the module redirected it), or undefined when it is dropped. */
  private handle(frame: Buffer, room: Room, scratch: Buffer): { data: Buffer; out: number } | undefined {
    const s = this.stats,
      def = this.fns,
      ctx = this.ctx;
    s.received++;
    let view = PacketView.parse(frame, room);
    if (typeof view === 'string') {
      // the dispatcher sends only IP packets it parsed: nothing to do but let it go on
      s.accepted++;
      return { data: frame, out: 0 };
    }
    // a checksum left for offload must be completed (AF_XDP sends bytes as they are); a corrupt
    // one is left for the receiver to drop, even if the module rewrites the packet
    view.noteChecksums();
    let cls = 1;
    if (def.classify) {
      try {
        cls = def.classify(view, ctx) >>> 0;
      } catch (e) {
        s.errors++;
        this.errs.error('classify threw', e);
        cls = 0;
      }
    }
    s.classes[Math.min(cls, abi.ITM_CLASS_BUCKETS - 1)]!++;
    if (def.log) {
      try {
        def.log(view, cls, ctx);
      } catch (e) {
        s.errors++;
        this.errs.error('log threw', e);
      }
    }
    let changed = false;
    if (cls !== 0 && def.process) {
      scratch.set(frame);
      try {
        if (def.process(view, cls, ctx) === 'drop') {
          s.dropped++;
          return undefined;
        }
        changed = view.modified || view.data !== frame || view.out !== 0;
      } catch (e) {
        // the packet goes on as it came, where it came
        frame.set(scratch.subarray(0, frame.length));
        view = PacketView.parse(frame, room) as PacketView;
        view.noteChecksums();
        s.errors++;
        this.errs.error('process threw', e);
      }
    }
    if (changed) {
      const bad =
        view.validate() ??
        (view.out && this.spec.hook === 'xdp'
          ? 'redirect() is for the tc hooks: at xdp the packet cannot leave by the neighbour table'
          : undefined);
      if (bad) {
        s.malformed++;
        this.errs.error('dropped a packet it cannot send', bad);
        return undefined;
      }
      s.modified++;
    }
    view.finish();
    s.accepted++;
    return { data: view.data, out: view.out };
  }

  /** class-update and controller-update, in this process: they see the `state` the per-packet
   * functions keep. A user module has no pinned maps or globals of its own. */
  private periodicContext(): PeriodicContext {
    const none = (what: string) => () => {
      throw new Error(`a user-space module has no ${what}: keep what the periodic functions need in ctx.state`);
    };
    return {
      name: this.ctx.name,
      dev: this.ctx.dev,
      hook: this.ctx.hook,
      open: none('pinned maps'),
      global: none('BPF globals'),
      params: this.ctx.params,
      state: this.ctx.state,
    };
  }

  private periodic(every: Periodic): void {
    const pctx = this.periodicContext();
    let last: PeriodicResult;
    try {
      const classes = every.classUpdate?.(pctx);
      const changed = every.controllerUpdate?.(pctx);
      last = { ...(classes ? { classes } : {}), ...(changed ? { changed } : {}) };
    } catch (e) {
      last = { error: e instanceof Error ? e.message : String(e) };
      this.errs.error('a periodic function threw', e);
    }
    tellAgent({ type: 'periodic', intervalMs: every.intervalMs, runs: ++this.periodicRuns, last });
  }

  /** Stops taking packets; run() then drains and resolves. */
  stop(): void {
    this.running = false;
  }

  async close(): Promise<void> {
    this.sock.close();
    try {
      try {
        this.periodicFns?.stop?.(this.periodicContext());
      } finally {
        await this.fns.stop?.(this.ctx);
      }
    } finally {
      for (const m of [this.uctl, this.uflight, this.xsks, this.ustats]) m.close();
      instance?.close();
    }
  }
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as HostSpec;
  let host: ModuleHost;
  try {
    host = await ModuleHost.start(spec);
  } catch (e) {
    tellAgent({ type: 'failed', message: e instanceof Error ? e.message : String(e) });
    process.exitCode = 1;
    return;
  }
  const stop = () => host.stop();
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // the agent went away (killed): stop too, so the packets bypass until a new agent adopts us
  process.on('disconnect', stop);
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'stop') stop();
  });
  tellAgent({ type: 'ready' });
  await host.run();
  await host.close();
  process.exit(0);
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  main().catch((e) => {
    process.stderr.write(`itm host: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exit(1);
  });
}
