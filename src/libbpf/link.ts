// Network devices through the addon's own netlink (native/link.cc, on libmnl) and ethtool's
// ioctl: veth pairs, delete, up/down and MTU, listing, the tc filters under a clsact direction,
// and offload features. No `ip`, `tc` or `ethtool` process is involved. Everything acts on the
// calling thread's network namespace. Failures are BpfErrors (ENODEV, EEXIST, EPERM, ...) whose
// message names the device; the kernel's extended ack, when it sent one, follows on a line of
// its own (and is in `log`).
import { BpfError, errorFromNative } from './errors.js';
import { native, type NativeLinkRow } from './native.js';
import type { TcAttachPoint } from './netlink.js';

/** A device, by its index or its name. */
export type LinkRef = number | string;

/** ARPHRD_* (include/uapi/linux/if_arp.h): what a link's hardware header is. */
export const ARPHRD = { ETHER: 1, LOOPBACK: 772, NONE: 0xfffe, IPGRE: 778, TUNNEL: 768, TUNNEL6: 769 } as const;

const IFF_UP = 0x1;
const IFF_LOWER_UP = 0x10000;
const RTN_UNICAST = 1;

export interface LinkInfo {
  ifindex: number;
  name: string;
  /** IFLA_INFO_KIND ('veth', 'bridge', ...); undefined for a device without one (say a NIC). */
  kind: string | undefined;
  /** The ARPHRD_* type (ARPHRD.ETHER for Ethernet). */
  type: number;
  /** IFF_* flags (IFF_UP is 1). */
  flags: number;
  up: boolean;
  /** IFF_LOWER_UP: it has carrier (a veth: its peer is up) */
  lowerUp: boolean;
  mtu: number;
  /** IFLA_LINK: a veth's peer, a vlan's lower device (an index, maybe in another namespace). */
  link: number | undefined;
}

export interface VethEnd {
  name: string;
  /** default: the kernel's (1500 for a veth) */
  mtu?: number;
  /** default: the kernel's (one per possible CPU for a veth) */
  txQueues?: number;
  rxQueues?: number;
}

function toLinkInfo(r: NativeLinkRow): LinkInfo {
  return {
    ifindex: r.ifindex,
    name: r.name,
    kind: r.kind,
    type: r.type,
    flags: r.flags,
    up: (r.flags & IFF_UP) !== 0,
    lowerUp: (r.flags & IFF_LOWER_UP) !== 0,
    mtu: r.mtu,
    link: r.link,
  };
}

export const link = {
  /** Creates the veth pair `a` <-> `b`, both ends down. EEXIST if a device of either name is there. */
  createVeth(a: VethEnd, b: VethEnd): void {
    native.vethCreate(a, b);
  },

  /** Deletes a device (either end of a veth takes the pair). ENODEV if there is none. */
  delete(dev: LinkRef): void {
    native.linkDelete(dev);
  },

  /** Sets a device up or down and/or its MTU. ENODEV if there is none. */
  set(dev: LinkRef, opts: { up?: boolean; mtu?: number }): void {
    const mtu = opts.mtu ?? 0;
    if (!Number.isInteger(mtu) || mtu < 0) throw new TypeError(`mtu must be a positive integer, not ${String(opts.mtu)}`);
    native.linkSet(dev, opts.up === undefined ? -1 : opts.up ? 1 : 0, mtu);
  },

  setUp(dev: LinkRef): void {
    link.set(dev, { up: true });
  },

  /** Every device of the namespace. */
  list(): LinkInfo[] {
    return native.linkList().map(toLinkInfo);
  },

  /** One device; throws BpfError ENODEV if there is none. */
  get(dev: LinkRef): LinkInfo {
    return toLinkInfo(native.linkGet(dev));
  },

  /** Whether the device is there (false only on ENODEV; other failures throw). */
  exists(dev: LinkRef): boolean {
    try {
      native.linkGet(dev);
      return true;
    } catch (err) {
      if (err instanceof BpfError && err.code === 'ENODEV') return false;
      throw err;
    }
  },
};

/** The route the FIB takes to an address now, as `ip route get` shows it. Whether its device has
 * carrier is the device's (LinkInfo.lowerUp): a lookup does not say. */
export interface RouteInfo {
  /** the device it leaves by */
  ifindex: number;
  /** RTN_UNICAST (not blackhole, prohibit, local, ...) */
  unicast: boolean;
  /** the source address the kernel would pick */
  src: string | undefined;
  gateway: string | undefined;
}

export const route = {
  /** The route to an IPv4 address (RTM_GETROUTE), undefined when there is none. */
  get(dst: string): RouteInfo | undefined {
    const r = native.routeGet(dst);
    if (!r) return undefined;
    return {
      ifindex: r.oif,
      unicast: r.type === RTN_UNICAST,
      src: r.prefsrc,
      gateway: r.gateway,
    };
  },
};

/**
 * The ARPHRD_* type of a device (ARPHRD.ETHER, 1, for Ethernet). Throws a BpfError when it cannot
 * tell (ENODEV: no such device; anything else: the kernel did not answer).
 */
export function linkType(dev: LinkRef): number {
  return native.linkGet(dev).type;
}

/** `ip link`'s name for an ARPHRD_* type ('ether', 'loopback', 'none', ...), else `ARPHRD n`. */
export function linkTypeName(type: number): string {
  const names: Record<number, string> = {
    1: 'ether',
    512: 'ppp',
    768: 'ipip',
    769: 'tunnel6',
    772: 'loopback',
    776: 'sit',
    778: 'gre',
    823: 'ip6gre',
    65534: 'none',
    65535: 'void',
  };
  return names[type] ?? `ARPHRD ${type}`;
}

/** Whether a device has Ethernet framing; throws (as linkType) when it cannot tell. */
export function isEthernet(dev: LinkRef): boolean {
  return linkType(dev) === ARPHRD.ETHER;
}

export interface TcFilterInfo {
  /** the classifier: 'bpf', 'u32', 'flower', 'matchall', ... */
  kind: string;
  priority: number;
  /** ETH_P_* in host order (ETH_P_ALL is 3) */
  protocol: number;
  /** 0 for the classifier instance itself, which the kernel lists ahead of its filters */
  handle: number;
  chain: number;
}

/**
 * Every filter, of any kind, under the clsact qdisc's `point` direction, as `tc filter show dev
 * X ingress|egress` lists them: each classifier instance (handle 0), then its filters. Empty
 * when the device has no clsact. Throws a BpfError when it cannot tell: ENODEV when the device
 * is not there (to which the kernel would answer an empty list), or when the dump failed.
 */
export function tcFilters(ifindex: number, point: TcAttachPoint): TcFilterInfo[] {
  return native.tcFilterList(ifindex, point);
}

/**
 * How many filters, of any kind, are under the clsact direction: the filters with a handle, and
 * a classifier instance listed with none as one (so it is 0 only when nothing at all is there).
 * 0 without a clsact qdisc. Throws a BpfError when it cannot tell (see tcFilters): a caller
 * deciding whether it may remove the qdisc should take a throw as "some remain".
 */
export function tcFilterCount(ifindex: number, point: TcAttachPoint): number {
  const rows = tcFilters(ifindex, point);
  let count = 0;
  const withFilters = new Set<string>();
  const instances = new Set<string>();
  for (const r of rows) {
    const key = `${r.chain}/${r.priority}/${r.protocol}/${r.kind}`;
    if (r.handle === 0) instances.add(key);
    else {
      count++;
      withFilters.add(key);
    }
  }
  for (const k of instances) if (!withFilters.has(k)) count++;
  return count;
}

export interface EthtoolFeature {
  /** the kernel's name, e.g. 'tx-tcp-segmentation', 'rx-gro' (the indented names of `ethtool -k`) */
  name: string;
  /** on now */
  active: boolean;
  /** what was last asked for */
  requested: boolean;
  /** the device lets it change */
  available: boolean;
  /** what `ethtool -k` marks [fixed]: not available, or never changeable */
  fixed: boolean;
}

const ETHTOOL_F_UNSUPPORTED = 1 << 0;
const EOPNOTSUPP = 95;

function unsupported(message: string, step: string): BpfError {
  return errorFromNative({ errno: EOPNOTSUPP, code: 'EOPNOTSUPP', description: 'Operation not supported', step, context: '', message });
}

export const ethtool = {
  /** Every feature of the device with its state, in the kernel's order. ENODEV if there is no such device. */
  features(dev: string): EthtoolFeature[] {
    return native.ethtoolFeatures(dev);
  },

  /**
   * Turns features on (true) or off (false) by name, then reads them back: a name the kernel does
   * not know throws BpfError EINVAL before anything changes; a feature left otherwise than asked
   * (fixed on this device, or held by one it depends on) throws a NotSupportedError (EOPNOTSUPP)
   * naming each. Features that depend on the ones changed may change with them.
   */
  setFeatures(dev: string, wanted: Record<string, boolean>): void {
    const names = Object.keys(wanted);
    if (names.length === 0) return;
    const flags = native.ethtoolSetFeatures(
      dev,
      names,
      names.map((n) => wanted[n]!),
    );
    const now = new Map(native.ethtoolFeatures(dev).map((f) => [f.name, f]));
    const left = names.filter((n) => now.get(n)?.active !== wanted[n]);
    if (left.length === 0) return;
    const what = left.map((n) => `${n} ${now.get(n)?.active === true ? 'on' : 'off'}${now.get(n)?.fixed === true ? ' [fixed]' : ''}`);
    const why =
      (flags & ETHTOOL_F_UNSUPPORTED) !== 0
        ? 'the device does not let them change'
        : 'the kernel kept them (fixed, or held by features they depend on)';
    throw unsupported(`ethtool set features of ${dev}: ${what.join(', ')} left as they were: ${why}`, 'ETHTOOL_SFEATURES');
  },
};
