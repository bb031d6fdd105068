// AF_XDP sockets (libxdp xsk.h). The socket owns one UMEM: `frames` frames of `frameSize` bytes,
// visible to JS without copies as one external Buffer. Frames move between four owners, and the
// addon checks every hand-over, so a frame can be neither lost nor handed out twice:
//
//   fill   the kernel, for reception (fill ring, the kernel's pool, or unread in the rx ring)
//   held   the caller: from receive() or allocTx(), until release() or transmit()
//   tx     the kernel, for transmission (tx ring, in flight, or unread in the completion ring)
//   free   the socket's free list, which allocTx() draws from
//
// At creation half the frames go to the fill ring and half to the free list. Frames that come back
// (release(), or reclaim() after transmission) refill the fill ring up to that half first and go
// to the free list after, so reception and transmission each keep frames to work with.
//
// No XDP program is loaded: attach your own and store `fd` in its XSKMAP at the socket's queue,
// e.g. `xskmap.update(u32(queue), u32(sock.fd))`.
import { native } from './native.js';

export interface XskOptions {
  ifindex: number;
  /** Device queue to bind to (default 0). */
  queue?: number;
  /** Frames in the UMEM (default 4096). */
  frames?: number;
  /** 2048 or 4096 bytes (default 2048). */
  frameSize?: number;
  /**
   * 'copy' (default) works on any device with XDP; 'zerocopy' needs driver support and fails with
   * NotSupportedError otherwise (veth, for one, has none).
   */
  mode?: 'copy' | 'zerocopy';
  /** Rx ring entries, a power of two (default 2048). */
  rxSize?: number;
  /** Tx ring entries, a power of two (default 2048). */
  txSize?: number;
}

/**
 * Descriptors of received packets. `addrs[i]` is the UMEM offset of packet i (not frame-aligned:
 * the kernel leaves headroom in front of it) and `lens[i]` its length, so its bytes are
 * `umem.subarray(addrs[i], addrs[i] + lens[i])`. Both arrays have exactly `count` elements and
 * share one allocation made by the addon; they stay valid (they are not reused) after later calls.
 */
export interface XskBatch {
  count: number;
  addrs: Uint32Array;
  lens: Uint32Array;
}

export interface XskStats {
  /** Dropped for reasons other than the ones below. */
  rxDropped: number;
  rxInvalid: number;
  txInvalid: number;
  /** Dropped because the rx ring was full (the application did not keep up). */
  rxRingFull: number;
  /** Times the kernel found the fill ring empty (no frame to receive into). */
  fillRingEmpty: number;
  txRingEmpty: number;
}

/** Where the UMEM's frames are; fill + held + tx + free === frames. */
export interface XskFrameCounts {
  frames: number;
  fill: number;
  held: number;
  tx: number;
  free: number;
  /** The addon's running counters and free list agree with the per-frame states. */
  consistent: boolean;
}

interface NativeXsk {
  fd(): number;
  umem(): Buffer | undefined;
  receive(max: number): Uint32Array | undefined;
  receiveInto(addrs: Uint32Array, lens: Uint32Array): number;
  release(addrs: Uint32Array): void;
  transmit(addrs: Uint32Array, lens: Uint32Array): number;
  reclaim(): number;
  allocTx(): number;
  wait(timeoutMs: number): Promise<boolean>;
  stats(): XskStats;
  counts(): XskFrameCounts;
  close(): void;
}

type NativeXskClass = new (
  ifindex: number,
  queue: number,
  frames: number,
  frameSize: number,
  zerocopy: boolean,
  rxSize: number,
  txSize: number,
) => NativeXsk;

const NativeXskCtor = (native as unknown as { NativeXsk: NativeXskClass }).NativeXsk;

const EMPTY = new Uint32Array(0);

function u32Array(a: ArrayLike<number>, what: string): Uint32Array {
  if (a instanceof Uint32Array) return a;
  const out = new Uint32Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (v === undefined || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new TypeError(`${what}[${i}] must be an unsigned 32-bit integer, got ${String(v)}`);
    }
    out[i] = v;
  }
  return out;
}

function u32Option(v: number | undefined, dflt: number, what: string): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new TypeError(`${what} must be an unsigned 32-bit integer`);
  return v;
}

export class XskSocket {
  readonly ifindex: number;
  readonly queue: number;
  readonly frames: number;
  readonly frameSize: number;
  readonly mode: 'copy' | 'zerocopy';
  /**
   * The whole UMEM, without copies: packet bytes are `umem.subarray(addr, addr + len)` and may
   * be modified in place before transmit(). After close() it (and every view on it) is detached
   * and has length 0.
   */
  readonly umem: Buffer;
  #native: NativeXsk;
  #closed = false;

  private constructor(n: NativeXsk, opts: Required<Omit<XskOptions, 'rxSize' | 'txSize'>>) {
    this.#native = n;
    this.ifindex = opts.ifindex;
    this.queue = opts.queue;
    this.frames = opts.frames;
    this.frameSize = opts.frameSize;
    this.mode = opts.mode;
    const umem = n.umem();
    if (umem === undefined) throw new Error('XSK: the addon gave no UMEM buffer');
    this.umem = umem;
  }

  /**
   * Creates the UMEM (fill ring pre-filled with half the frames) and binds a socket to
   * (ifindex, queue) in copy or zero-copy mode with XDP_USE_NEED_WAKEUP. Throws a BpfError
   * (ENXIO/ENODEV for an unknown device) or a NotSupportedError (zero-copy not available).
   */
  static create(opts: XskOptions): XskSocket {
    const mode = opts.mode ?? 'copy';
    if (mode !== 'copy' && mode !== 'zerocopy') throw new TypeError(`unknown XSK mode: ${String(mode)}`);
    const o = {
      ifindex: u32Option(opts.ifindex, 0, 'ifindex'),
      queue: u32Option(opts.queue, 0, 'queue'),
      frames: u32Option(opts.frames, 4096, 'frames'),
      frameSize: u32Option(opts.frameSize, 2048, 'frameSize'),
      mode,
    };
    const n = new NativeXskCtor(
      o.ifindex,
      o.queue,
      o.frames,
      o.frameSize,
      mode === 'zerocopy',
      u32Option(opts.rxSize, 2048, 'rxSize'),
      u32Option(opts.txSize, 2048, 'txSize'),
    );
    try {
      return new XskSocket(n, o);
    } catch (err) {
      n.close();
      throw err;
    }
  }

  /** The socket fd (owned by the socket; do not close it), or -1 once closed. */
  get fd(): number {
    return this.#closed ? -1 : this.#native.fd();
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Takes up to `max` received packets off the rx ring in one native call. The frames are the
   * caller's until given back with release() (or sent with transmit()).
   */
  receive(max: number): XskBatch {
    const all = this.#native.receive(max);
    if (all === undefined) return { count: 0, addrs: EMPTY, lens: EMPTY };
    const count = all.length >>> 1;
    return { count, addrs: all.subarray(0, count), lens: all.subarray(count) };
  }

  /**
   * Allocation-free receive: fills at most min(addrs.length, lens.length) entries of the caller's
   * arrays and returns how many.
   */
  receiveInto(addrs: Uint32Array, lens: Uint32Array): number {
    return this.#native.receiveInto(addrs, lens);
  }

  /**
   * Gives frames back (any address inside a held frame names that frame). All must be held by
   * the caller, each listed once; otherwise a BpfError(EINVAL) is thrown and nothing changes.
   */
  release(addrs: ArrayLike<number>): void {
    this.#native.release(u32Array(addrs, 'addrs'));
  }

  /**
   * Queues packets (addrs[i], lens[i]) — frames the caller holds, each packet inside its frame —
   * on the tx ring and kicks the kernel (copy mode sends only from sendto()). Returns how many
   * were queued: when the tx ring is full the rest (addrs[count..]) stay held by the caller.
   * Queued frames return through reclaim().
   */
  transmit(addrs: ArrayLike<number>, lens: ArrayLike<number>): number {
    return this.#native.transmit(u32Array(addrs, 'addrs'), u32Array(lens, 'lens'));
  }

  /** Takes finished transmissions off the completion ring (and kicks a pending tx); returns how many. */
  reclaim(): number {
    return this.#native.reclaim();
  }

  /** A free frame's address (frame-aligned) for building a packet, or undefined if none is free. */
  allocTx(): number | undefined {
    const addr = this.#native.allocTx();
    return addr < 0 ? undefined : addr;
  }

  /**
   * Resolves true when the rx ring has packets, false after `timeoutMs` without any (or when the
   * socket is closed meanwhile). Already-pending packets resolve at once; otherwise poll(2) runs
   * on the libuv threadpool, so the event loop is never blocked (but a pool thread is, for up to
   * the timeout).
   */
  async wait(timeoutMs: number): Promise<boolean> {
    return this.#native.wait(timeoutMs);
  }

  /** The kernel's counters for this socket (getsockopt XDP_STATISTICS). */
  stats(): XskStats {
    return this.#native.stats();
  }

  /** Where every frame is (walks the per-frame states; meant for tests and debugging). */
  frameCounts(): XskFrameCounts {
    return this.#native.counts();
  }

  /**
   * Idempotent. Frees the socket and the UMEM and detaches `umem`. A socket dropped without
   * close() is freed when garbage-collected.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#native.close();
  }
}
