import { adopt, FdHandle } from './fd.js';
import { native } from './native.js';

export interface TestRunOptions {
  /** Packet (or other input) data; XDP and tc programs need at least an Ethernet header. */
  data: Buffer;
  /** Number of runs; the reported duration is the kernel's average per run. */
  repeat?: number;
  /** Context in (e.g. a struct __sk_buff image). */
  ctx?: Buffer;
  /** Capacity for output data; defaults to the input size plus room for the program to grow it. */
  dataSizeOut?: number;
  /** Capacity for the output context; defaults to the input context's size. */
  ctxSizeOut?: number;
}

export interface TestRunResult {
  retval: number;
  /** Nanoseconds per repetition as reported by the kernel. */
  duration: number;
  data: Buffer;
  ctx?: Buffer;
}

// Enough for programs that push headers (encapsulation, VLAN tags) without asking the caller.
const DATA_OUT_HEADROOM = 512;

export class BpfProgram extends FdHandle {
  readonly id: number;
  /** Full function name when known (from an object), else the kernel's name (at most 15 bytes). */
  readonly name: string;
  /** A BPF_PROG_TYPE value. */
  readonly type: number;
  /** The kernel's program tag, as 16 hex digits. */
  readonly tag: string;

  private constructor(fd: number, name?: string) {
    const info = native.progInfo(fd);
    super(fd);
    this.id = info.id;
    this.name = name ?? info.name;
    this.type = info.type;
    this.tag = info.tag;
  }

  /** @internal Takes ownership of `fd`. */
  static adoptFd(fd: number, name?: string): BpfProgram {
    return adopt(fd, (f) => new BpfProgram(f, name));
  }

  /** A new handle on a program the caller keeps its own fd for (the fd is duplicated). */
  static fromFd(fd: number): BpfProgram {
    return BpfProgram.adoptFd(native.dupFd(fd));
  }

  static fromPin(path: string): BpfProgram {
    return BpfProgram.adoptFd(native.objGet(path));
  }

  static fromId(id: number): BpfProgram {
    return BpfProgram.adoptFd(native.progFdById(id));
  }

  protected describe(): string {
    return `program "${this.name}"`;
  }

  pin(path: string): void {
    native.objPin(this.describe(), this.liveFd('bpf_obj_pin'), path);
  }

  testRun(opts: TestRunOptions): TestRunResult {
    const fd = this.liveFd('bpf_prog_test_run_opts');
    const res = native.progTestRun(
      this.describe(),
      fd,
      opts.data,
      opts.repeat ?? 1,
      opts.ctx,
      opts.dataSizeOut ?? opts.data.length + DATA_OUT_HEADROOM,
      opts.ctxSizeOut ?? opts.ctx?.length ?? 0,
    );
    const out: TestRunResult = { retval: res.retval, duration: res.duration, data: res.data };
    if (res.ctx !== undefined) out.ctx = res.ctx;
    return out;
  }
}
