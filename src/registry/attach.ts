// How a hook's dispatcher is attached to its device: at xdp, the device's one XDP program; at
// tc-ingress and tc-egress, a tcx link where the kernel has tcx (6.6 and later), else a cls_bpf
// filter at itm's handle and priority on clsact. All behind one interface, so setting a hook up,
// repairing it and taking it down is written once.
//
// tcx: the link is pinned in the hook's pin directory (`<hookDir>/link`), so the dispatcher stays
// attached after itmctl exits and a later itmctl finds it; it goes first among the hook's tcx
// programs (BPF_F_BEFORE with no anchor; see docs/kernel.md, "tcx"), and is updated in place
// (bpf_link_update, compare-and-swap on the program it holds) when the dispatcher is replaced, so
// it keeps its place. Other programs on the hook are never detached or moved.
//
// A hook keeps the kind it was set up with: one an older itm attached by cls_bpf stays cls_bpf
// until `down`. ITM_TC_ATTACH=cls_bpf (or =tcx) decides for hooks set up from scratch.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ItmError } from '../errors.js';
import { BpfError, BpfLink, BpfProgram, tc, tcx, xdp } from '../libbpf/index.js';
import { TC_HANDLE, TC_PRIORITY } from '../divert.js';
import type { Hook } from '../module-def.js';
import { hookPinDir, type HookRecord } from '../state.js';
import { log } from '../log.js';
import { progName } from './devices.js';

export type AttachKind = 'xdp' | 'tcx' | 'cls_bpf';
type TcKind = 'tcx' | 'cls_bpf';

export interface Attachment {
  readonly kind: AttachKind;
  /** the program at itm's place on the hook, if there is one */
  current(): number | undefined;
  /** the place exists (cls_bpf: the clsact qdisc); true if this call made it */
  prepare(): boolean;
  /** without `replace`, fails rather than evict a program another tool put there meanwhile */
  attach(fd: number, replace: boolean): void;
  detach(): void;
  /** what a person is told when a program that is not itm's holds the place */
  taken(id: number, name: string | undefined): string;
  /** how it is attached, where there is a choice (xdp: native or generic) */
  mode(): string | undefined;
  /** tcx: the id of itm's link, while it is attached */
  linkId(): number | undefined;
}

const FILTER = { handle: TC_HANDLE, priority: TC_PRIORITY };

export const tcPoint = (hook: Hook) => (hook === 'tc-ingress' ? 'ingress' : 'egress');

/** Where a hook's tcx link is pinned. */
export const linkPin = (ifindex: number, hook: Hook) => join(hookPinDir(ifindex, hook), 'link');

let tcxProbe: boolean | undefined;
function kernelHasTcx(): boolean {
  tcxProbe ??= tcx.supported();
  return tcxProbe;
}

/** How a tc hook set up from scratch is attached: ITM_TC_ATTACH if set, else tcx where the kernel has it. */
function preferredTcKind(): 'tcx' | 'cls_bpf' {
  const want = process.env.ITM_TC_ATTACH ?? '';
  if (want === 'cls_bpf') return 'cls_bpf';
  if (want === 'tcx') {
    if (!kernelHasTcx()) throw new ItmError('ITM_TC_ATTACH=tcx, but this kernel has no tcx (it needs Linux 6.6 or later)');
    return 'tcx';
  }
  if (want !== '' && want !== 'auto') throw new ItmError(`ITM_TC_ATTACH must be tcx, cls_bpf or auto, not '${want}'`);
  return kernelHasTcx() ? 'tcx' : 'cls_bpf';
}

/** The program of an itm dispatcher at itm's cls_bpf place, if one is there. */
function clsDispatcher(ifindex: number, hook: Hook): number | undefined {
  const id = tc.query(ifindex, tcPoint(hook), FILTER)?.progId;
  return id !== undefined && progName(id) === 'itm_dispatch' ? id : undefined;
}

/** How the tc hook is attached: as it is (a pinned link: tcx; an itm dispatcher in itm's cls_bpf
 * filter: cls_bpf), else as its record says it was (a hook being repaired), else as a new hook
 * would be. */
function tcKind(ifindex: number, hook: Hook, recorded: TcKind | undefined): TcKind {
  if (existsSync(linkPin(ifindex, hook))) return 'tcx';
  if (clsDispatcher(ifindex, hook) !== undefined) return 'cls_bpf';
  if (recorded === 'cls_bpf' || (recorded === 'tcx' && kernelHasTcx())) return recorded;
  return preferredTcKind();
}

/** How a hook's record says it is attached (see HookRecord.attach), if it has a record. */
export function recordedKind(hr: HookRecord | undefined): TcKind | undefined {
  return hr ? (hr.attach ?? 'cls_bpf') : undefined;
}

/** Attaches an xdp program: native mode if the driver supports it, generic otherwise. */
function attachXdp(ifindex: number, fd: number, replace: boolean): void {
  try {
    xdp.attach(ifindex, fd, { mode: 'native', replace });
  } catch (e) {
    if (!(e instanceof BpfError) || !['EOPNOTSUPP', 'EINVAL', 'ENOTSUP'].includes(e.code ?? '')) throw e;
    log.info({ err: e }, 'native XDP refused, attaching in generic (skb) mode');
    xdp.attach(ifindex, fd, { mode: 'generic', replace });
  }
}

/** The attachment of a hook: `kind` names it; else, at tc, it is found (see tcKind), `recorded`
 * being what the hook's record says. */
export function attachment(ifindex: number, hook: Hook, opts: { kind?: TcKind; recorded?: TcKind | undefined } = {}): Attachment {
  if (hook === 'xdp') {
    return {
      kind: 'xdp',
      current: () => xdp.query(ifindex)?.progId,
      prepare: () => false,
      attach: (fd, replace) => attachXdp(ifindex, fd, replace),
      detach: () => xdp.detach(ifindex),
      taken: (id, name) => `another XDP program (id ${id}, ${name ?? '?'}) is attached to it`,
      mode: () => xdp.query(ifindex)?.mode,
      linkId: () => undefined,
    };
  }
  return (opts.kind ?? tcKind(ifindex, hook, opts.recorded)) === 'tcx' ? tcxAttachment(ifindex, hook) : clsAttachment(ifindex, hook);
}

function clsAttachment(ifindex: number, hook: Hook): Attachment {
  const point = tcPoint(hook);
  return {
    kind: 'cls_bpf',
    current: () => tc.query(ifindex, point, FILTER)?.progId,
    prepare: () => tc.hookCreate(ifindex, point).created,
    attach: (fd, replace) => {
      tc.attach(ifindex, point, fd, { ...FILTER, replace });
    },
    detach: () => tc.detach(ifindex, point, FILTER),
    taken: () => `another filter holds tc handle 0x${TC_HANDLE.toString(16)} pref ${TC_PRIORITY}`,
    mode: () => undefined,
    linkId: () => undefined,
  };
}

function tcxAttachment(ifindex: number, hook: Hook): Attachment {
  const point = tcPoint(hook);
  const pin = linkPin(ifindex, hook);
  const openLink = (): BpfLink | undefined => {
    try {
      return BpfLink.fromPin(pin);
    } catch (e) {
      if (e instanceof BpfError && e.code === 'ENOENT') return undefined;
      throw e;
    }
  };
  /** itm's link and the program it runs, if it is attached to the hook (a link detached by
   * someone, or whose device went, is defunct: not on the hook's list) */
  const live = (): { link: BpfLink; progId: number } | undefined => {
    const link = openLink();
    if (!link) return undefined;
    const e = tcx.query(ifindex, point).entries.find((x) => x.linkId === link.id);
    if (e) return { link, progId: e.progId };
    link.close();
    return undefined;
  };
  return {
    kind: 'tcx',
    current: () => {
      const l = live();
      l?.link.close();
      return l?.progId;
    },
    prepare: () => false,
    attach: (fd, replace) => {
      const prog = BpfProgram.fromFd(fd);
      try {
        const l = live();
        if (l) {
          try {
            if (!replace) throw new ItmError(`itm's tcx link ${l.link.id} on ${point} is attached already`);
            // in place: same link, same place among the hook's programs; only if it still runs
            // the program seen, so a change made meanwhile is not overwritten
            const old = BpfProgram.fromId(l.progId);
            try {
              l.link.update(prog, { old });
            } finally {
              old.close();
            }
          } finally {
            l.link.close();
          }
          return;
        }
        // a defunct link's pin holds nothing attached: it goes, and a new link takes its name
        rmSync(pin, { force: true });
        const link = tcx.attach(ifindex, point, prog, { where: 'first' });
        try {
          link.pin(pin);
        } catch (e) {
          link.detach();
          throw e;
        } finally {
          link.close();
        }
      } finally {
        prog.close();
      }
    },
    detach: () => {
      const link = openLink();
      if (!link) return;
      try {
        link.detach();
      } finally {
        link.close();
        rmSync(pin, { force: true });
      }
    },
    taken: (id, name) => `itm's tcx link runs a program that is not itm's (id ${id}, ${name ?? '?'})`,
    mode: () => undefined,
    linkId: () => {
      const l = live();
      l?.link.close();
      return l?.link.id;
    },
  };
}
