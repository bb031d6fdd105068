// BPF links, and tcx: the multi-program tc hooks of kernel 6.6 and later, where each program is
// held by a link (an fd, or a pin in bpffs) and has a place among the others of its hook.
// A link's program runs while the link lives: close its last fd and remove its last pin and it is
// detached. Everything acts on the calling thread's network namespace.
import { adopt, FdHandle } from './fd.js';
import { native } from './native.js';
import type { BpfProgram } from './program.js';

/** enum bpf_link_type (UAPI): the kinds of link this layer names */
export const BPF_LINK_TYPE = { XDP: 6, TCX: 11 } as const;
/** enum bpf_attach_type (UAPI, 6.6): the tcx hooks */
export const BPF_TCX = { INGRESS: 46, EGRESS: 47 } as const;

export type TcxDirection = 'ingress' | 'egress';

export class BpfLink extends FdHandle {
  readonly id: number;
  /** a BPF_LINK_TYPE value */
  readonly type: number;

  private constructor(fd: number) {
    const info = native.linkInfo(fd);
    super(fd);
    this.id = info.id;
    this.type = info.type;
  }

  /** @internal Takes ownership of `fd`. */
  static adoptFd(fd: number): BpfLink {
    return adopt(fd, (f) => new BpfLink(f));
  }

  static fromPin(path: string): BpfLink {
    return BpfLink.adoptFd(native.objGet(path));
  }

  static fromId(id: number): BpfLink {
    return BpfLink.adoptFd(native.linkFdById(id));
  }

  protected describe(): string {
    return `link ${this.id}`;
  }

  /** What the link holds now: its program, and for tcx its device (0 once detached) and hook. */
  info(): { progId: number; ifindex?: number; attachType?: number } {
    const i = native.linkInfo(this.liveFd('bpf_obj_get_info_by_fd'));
    return {
      progId: i.progId,
      ...(i.ifindex !== undefined ? { ifindex: i.ifindex } : {}),
      ...(i.attachType !== undefined ? { attachType: i.attachType } : {}),
    };
  }

  /** Pins the link: it (and its program's attachment) outlives this process. */
  pin(path: string): void {
    native.objPin(this.describe(), this.liveFd('bpf_obj_pin'), path);
  }

  /**
   * Puts another program in the link's place, in one step (at tcx, the same place among the
   * hook's programs). With `old`, only if that is the program attached (EPERM otherwise).
   */
  update(prog: BpfProgram, opts: { old?: BpfProgram } = {}): void {
    native.linkUpdate(this.describe(), this.liveFd('bpf_link_update'), prog.fd, opts.old?.fd ?? -1);
  }

  /** Detaches the link's program now; the link stays, defunct, until its fds and pins go. */
  detach(): void {
    native.linkDetach(this.describe(), this.liveFd('bpf_link_detach'));
  }
}

/** Where a program goes among the others of a tcx hook. */
export interface TcxAttachOptions {
  /**
   * 'first' (the head, BPF_F_BEFORE with no anchor), 'last' (the tail, BPF_F_AFTER with no
   * anchor), or right 'before'/'after' the anchor; default 'last'.
   */
  where?: 'first' | 'last' | 'before' | 'after';
  /** the anchor for before/after: a program (or its id) or a link (or its id) on the hook */
  anchor?: { progFd: number } | { progId: number } | { linkFd: number } | { linkId: number };
  /** attach only if the hook is still at this revision (see tcx.query); EBUSY otherwise */
  expectedRevision?: bigint;
}

export interface TcxEntry {
  progId: number;
  /** 0 for a program attached without a link */
  linkId: number;
}

export const tcx = {
  /** Whether the kernel has tcx (6.6 and later). */
  supported(): boolean {
    return native.tcxSupported();
  },

  /** Attaches a tc program (BPF_PROG_TYPE_SCHED_CLS) by a new link; EEXIST if it is on the hook already. */
  attach(ifindex: number, direction: TcxDirection, prog: BpfProgram, opts: TcxAttachOptions = {}): BpfLink {
    const where = opts.where ?? 'last';
    const a = opts.anchor;
    if ((where === 'before' || where === 'after') !== (a !== undefined)) {
      throw new TypeError(`tcx attach: ${where} ${a === undefined ? 'needs an anchor' : 'takes no anchor'}`);
    }
    let kind = 'none';
    let rel = 0;
    if (a !== undefined) {
      if ('progFd' in a) [kind, rel] = ['fd', a.progFd];
      else if ('progId' in a) [kind, rel] = ['id', a.progId];
      else if ('linkFd' in a) [kind, rel] = ['linkFd', a.linkFd];
      else [kind, rel] = ['linkId', a.linkId];
    }
    const fd = native.tcxLinkCreate(ifindex, direction, prog.fd, where, kind, rel, opts.expectedRevision ?? 0n);
    return BpfLink.adoptFd(fd);
  },

  /** The hook's programs in the order they run, and its revision (which every change moves). */
  query(ifindex: number, direction: TcxDirection): { revision: bigint; entries: TcxEntry[] } {
    const q = native.tcxQuery(ifindex, direction);
    return { revision: q.revision, entries: q.progIds.map((progId, i) => ({ progId, linkId: q.linkIds[i] ?? 0 })) };
  },
};
