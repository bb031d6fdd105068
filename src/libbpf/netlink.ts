// tc and XDP attachment plus interface lookups. All of it acts on the network namespace of the
// calling process.
import { native } from './native.js';

export type TcAttachPoint = 'ingress' | 'egress';

export interface TcFilterId {
  /** Filter handle (libbpf picks one when 0 is given to attach). */
  handle: number;
  /** Filter priority (libbpf picks one when 0 is given to attach). */
  priority: number;
}

export interface TcAttachOptions extends TcFilterId {
  /** Replace an existing filter at the same handle/priority instead of failing with EEXIST. */
  replace?: boolean;
}

export const tc = {
  /** Ensures the clsact qdisc exists; `created` is false if it was already there. */
  hookCreate(ifindex: number, point: TcAttachPoint): { created: boolean } {
    return { created: native.tcHookCreate(ifindex, point) };
  },

  /** Removes the clsact qdisc, and with it every filter in both directions. */
  hookDestroy(ifindex: number): void {
    native.tcHookDestroy(ifindex);
  },

  /** Attaches a direct-action classifier. */
  attach(ifindex: number, point: TcAttachPoint, progFd: number, opts: TcAttachOptions): { progId: number } {
    return {
      progId: native.tcAttach(ifindex, point, progFd, opts.handle, opts.priority, opts.replace ?? false),
    };
  },

  detach(ifindex: number, point: TcAttachPoint, opts: TcFilterId): void {
    native.tcDetach(ifindex, point, opts.handle, opts.priority);
  },

  /**
   * The program attached at handle/priority, or undefined if there is no such filter (including
   * when the interface has no clsact qdisc at all).
   */
  query(ifindex: number, point: TcAttachPoint, opts: TcFilterId): { progId: number } | undefined {
    const progId = native.tcQuery(ifindex, point, opts.handle, opts.priority);
    return progId === undefined ? undefined : { progId };
  },
};

export type XdpMode = 'native' | 'generic' | 'offload';

const XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0;
const XDP_MODE_FLAGS: Record<XdpMode, number> = { native: 1 << 2, generic: 1 << 1, offload: 1 << 3 };
const XDP_ATTACHED: Record<number, XdpMode | 'multi'> = { 1: 'native', 2: 'generic', 3: 'offload', 4: 'multi' };

function modeFlags(mode: XdpMode | undefined): number {
  if (mode === undefined) return 0;
  const f = XDP_MODE_FLAGS[mode];
  if (f === undefined) throw new TypeError(`unknown XDP mode: ${String(mode)}`);
  return f;
}

export interface XdpAttachOptions {
  /** Without a mode the kernel uses native if the driver supports it, else generic. */
  mode?: XdpMode;
  /** Replace an attached program instead of failing with EBUSY. */
  replace?: boolean;
}

export const xdp = {
  attach(ifindex: number, progFd: number, opts: XdpAttachOptions = {}): void {
    const flags = modeFlags(opts.mode) | (opts.replace === true ? 0 : XDP_FLAGS_UPDATE_IF_NOEXIST);
    native.xdpAttach(ifindex, progFd, flags);
  },

  /**
   * Without a mode, detaches whatever is attached (in every mode) — the kernel's own default
   * would only look at native mode and miss a generic attachment.
   */
  detach(ifindex: number, opts: { mode?: XdpMode } = {}): void {
    if (opts.mode !== undefined) {
      native.xdpDetach(ifindex, modeFlags(opts.mode));
      return;
    }
    const q = native.xdpQuery(ifindex);
    if (q.drvProgId !== 0) native.xdpDetach(ifindex, XDP_MODE_FLAGS.native);
    if (q.skbProgId !== 0) native.xdpDetach(ifindex, XDP_MODE_FLAGS.generic);
    if (q.hwProgId !== 0) native.xdpDetach(ifindex, XDP_MODE_FLAGS.offload);
  },

  /** The attached program, or undefined; in 'multi' mode progId is the native-mode program. */
  query(ifindex: number): { progId: number; mode: XdpMode | 'multi' } | undefined {
    const q = native.xdpQuery(ifindex);
    const mode = XDP_ATTACHED[q.attachMode];
    if (mode === undefined) return undefined;
    const progId = q.progId || q.drvProgId || q.skbProgId || q.hwProgId;
    return { progId, mode };
  },
};

/** Throws BpfError ENODEV (`no such device: NAME`) for unknown names. */
export function ifNameToIndex(name: string): number {
  return native.ifNameToIndex(name);
}

export function ifIndexToName(index: number): string | undefined {
  return native.ifIndexToName(index);
}
