// The capture file of one `capture` instance: pcapng, written through a buffer, with a packet and
// byte budget. Nothing here throws at a packet: past the budget, or after a write error, packets
// are counted and not written (they go on through the chain all the same).
import { closeSync, ftruncateSync, writeSync } from 'node:fs';
import { release as osRelease, type as osType } from 'node:os';
import { dirname } from 'node:path';
import { BpfError, EPB_INBOUND, EPB_OUTBOUND, lockFile, PcapngWriter, scanPcapng, type Hook } from '../../src/sdk.js';

export interface CaptureOptions {
  file: string;
  name: string;
  dev: string;
  hook: Hook;
  snaplen: number;
  /** 0: no limit */
  maxPackets: number;
  /** captured bytes (after snaplen); 0: no limit */
  maxBytes: number;
  /** what identifies this load of the instance (its record's id and load time): a file that
   * starts with the same mark is this load's, left by an earlier host, and is continued */
  loadMark?: string;
  /** write to the file once this many bytes are buffered */
  flushAt?: number;
}

const LOCK_WAIT_MS = 3000;

function say(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

/** The file, created (or, for the same load, continued) and locked: one writer at a time. */
function openLocked(file: string): number {
  try {
    return lockFile(file, LOCK_WAIT_MS);
  } catch (e) {
    const code = e instanceof BpfError ? e.code : (e as NodeJS.ErrnoException).code;
    switch (code) {
      case 'ENOENT':
        throw new Error(`cannot create ${file}: directory ${dirname(file)} does not exist`);
      case 'ENOTDIR':
        throw new Error(`cannot create ${file}: ${dirname(file)} is not a directory`);
      case 'EACCES':
      case 'EPERM':
      case 'EROFS':
        throw new Error(`cannot create ${file}: ${dirname(file)} is not writable (${code})`);
      case 'EISDIR':
        throw new Error(`cannot write to ${file}: it is a directory`);
      case 'EWOULDBLOCK':
      case 'EAGAIN':
        throw new Error(`${file} is being written by another capture (it holds its lock)`);
      default:
        throw new Error(`cannot create ${file}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}

export class Capture {
  /** packets the module saw, written, and not written (budget reached, or the file failed) */
  seen = 0;
  written = 0;
  writtenBytes = 0;
  skipped = 0;
  skippedBytes = 0;
  /** packets of this load written by earlier hosts (earlier sections of the file) */
  readonly earlier: { packets: number; bytes: number };
  private full = false;
  private failed?: string;
  private closed = false;
  private readonly writer: PcapngWriter;
  private readonly iface: number;
  private readonly flags: number;
  private readonly comments = new Map<number, Buffer>();
  private readonly startNs: bigint;
  /** hrtime to the epoch, in ns */
  private readonly clockBase: bigint;
  private pos: number;

  private constructor(
    readonly opts: CaptureOptions,
    private readonly fd: number,
    at: number,
    earlier: { packets: number; bytes: number },
  ) {
    this.pos = at;
    this.earlier = earlier;
    this.clockBase = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
    this.startNs = this.now();
    this.flags = opts.hook === 'tc-egress' ? EPB_OUTBOUND : EPB_INBOUND;
    const comments = [
      `itm capture: instance ${opts.name} on ${opts.dev} ${opts.hook}; snaplen ${opts.snaplen}, ` +
        `max-packets ${opts.maxPackets || 'no limit'}, max-bytes ${opts.maxBytes || 'no limit'}`,
    ];
    if (opts.loadMark) comments.push(opts.loadMark);
    if (at > 0)
      comments.push(`this section goes on after its host was restarted: the ones before hold ${earlier.packets} packets of the same load`);
    this.writer = new PcapngWriter(
      (chunk) => this.write(chunk),
      { application: 'itm capture', os: `${osType()} ${osRelease()}`, comments },
      opts.flushAt,
    );
    this.iface = this.writer.addInterface({ name: opts.dev, description: `itm ${opts.hook} (${opts.name})`, snaplen: opts.snaplen });
    this.writer.flush();
  }

  /**
   * Creates the file, or continues it when it holds this load already (a host restarted after a
   * crash, or by a new agent): a new section is appended after its last complete block.
   */
  static open(opts: CaptureOptions): Capture {
    const fd = openLocked(opts.file);
    try {
      let at = 0,
        earlier = { packets: 0, bytes: 0 };
      const scan = scanPcapng(fd);
      if (opts.loadMark && scan.firstComments?.includes(opts.loadMark)) {
        at = scan.end;
        earlier = { packets: scan.packets, bytes: scan.bytes };
      }
      ftruncateSync(fd, at);
      return new Capture(opts, fd, at, earlier);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  private now(): bigint {
    return this.clockBase + process.hrtime.bigint();
  }

  private write(chunk: Buffer): void {
    for (let off = 0; off < chunk.length; ) {
      const n = writeSync(this.fd, chunk, off, chunk.length - off, this.pos);
      off += n;
      this.pos += n;
    }
  }

  private fail(e: unknown): void {
    this.failed = e instanceof Error ? e.message : String(e);
    say(
      `${this.opts.name} on ${this.opts.dev} ${this.opts.hook}: writing ${this.opts.file} failed, no more packets are written: ${this.failed}`,
    );
  }

  /** One packet, with the class it was given. Never throws. */
  add(data: Buffer, cls: number): void {
    this.seen++;
    const o = this.opts;
    const cap = o.snaplen && data.length > o.snaplen ? o.snaplen : data.length;
    if (!this.full && !this.failed) {
      const packets = this.earlier.packets + this.written,
        bytes = this.earlier.bytes + this.writtenBytes;
      if ((o.maxPackets && packets + 1 > o.maxPackets) || (o.maxBytes && bytes + cap > o.maxBytes)) {
        this.full = true;
        say(
          `${o.name} on ${o.dev} ${o.hook}: budget reached (${packets} packets, ${bytes} bytes): no more packets are written to ${o.file}`,
        );
      }
    }
    if (this.full || this.failed || this.closed) {
      this.skipped++;
      this.skippedBytes += data.length;
      return;
    }
    let comment = this.comments.get(cls);
    if (!comment) {
      comment = Buffer.from(`itm class=${cls} hook=${o.hook}`);
      if (this.comments.size < 256) this.comments.set(cls, comment);
    }
    try {
      this.writer.packet(this.iface, this.now(), data, { comment, flags: this.flags });
      this.written++;
      this.writtenBytes += cap;
    } catch (e) {
      this.skipped++;
      this.skippedBytes += data.length;
      this.fail(e);
    }
  }

  /** Writes out what is buffered (every second, say); never throws. */
  flush(): void {
    if (this.failed || this.closed) return;
    try {
      this.writer.flush();
    } catch (e) {
      this.fail(e);
    }
  }

  /** Ends the section with its statistics, writes everything out and closes the file; says what
   * it wrote. Never throws. */
  close(): string {
    if (this.closed) return this.summary();
    if (!this.failed) {
      try {
        const skipped = this.skipped
          ? `${this.skipped} packets (${this.skippedBytes} bytes) were not written: the budget was reached`
          : 'every packet seen was written';
        this.writer.statistics(this.iface, {
          tsNs: this.now(),
          startNs: this.startNs,
          endNs: this.now(),
          received: BigInt(this.seen),
          delivered: BigInt(this.written),
          comments: [`itm capture: ${this.seen} packets seen, ${this.written} written; ${skipped}`],
        });
        this.writer.flush();
      } catch (e) {
        this.fail(e);
      }
    }
    this.closed = true;
    try {
      closeSync(this.fd); // and with it the lock
    } catch (e) {
      if (!this.failed) this.fail(e);
    }
    return this.summary();
  }

  summary(): string {
    const o = this.opts;
    const earlier = this.earlier.packets ? ` (and ${this.earlier.packets} before its host was restarted)` : '';
    const skipped = this.skipped
      ? `; ${this.skipped} packets (${this.skippedBytes} bytes) not written: ${this.failed ? `the file failed (${this.failed})` : 'over the budget'}`
      : '';
    return `${o.name} on ${o.dev} ${o.hook}: ${this.written} packets (${this.writtenBytes} bytes) written to ${o.file}${earlier}${skipped}`;
  }
}
