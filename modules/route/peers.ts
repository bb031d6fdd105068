// A neighbour's entry in route_peers: where it is, and the underlay route to its address as this
// namespace's FIB has it (asked over netlink, at load and then by the control plane every period).
import { encode, link, route } from '../../src/sdk.js';
import * as abi from './route.abi.js';
import type { Neighbour } from './topology.js';

export const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
/** an IPv4 address as the 4 bytes of network order */
export const ipv4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));

export interface Underlay {
  ifindex: number;
  dev: string;
  src: string;
  mtu: number;
  /** the route's next hop: its gateway, or the address itself on a link to it */
  gw: string;
}

/** The underlay route to one address now: none for a route that is not unicast, or over a
 * device without carrier (no LOWER_UP: the other end is gone). */
function underlayRoute(addr: string): Underlay | undefined {
  try {
    const r = route.get(addr);
    if (!r?.src || !r.unicast) return undefined;
    const l = link.get(r.ifindex);
    return l.lowerUp ? { ifindex: l.ifindex, dev: l.name, src: r.src, mtu: l.mtu, gw: r.gateway ?? addr } : undefined;
  } catch {
    return undefined; // the device went between the two questions
  }
}

/** The underlay routes to several addresses now (undefined: none). Two netlink requests each,
 * no process: the control plane asks every period, on the CPUs the traffic uses. */
export function underlayRoutes(addrs: string[]): Array<Underlay | undefined> {
  return addrs.map(underlayRoute);
}

/** A peer's entry: its address, key id and slot, and the underlay route to it (its keys are in
 * route_keys, at its slot). */
export function peerEntry(n: Neighbour, via: Underlay | undefined): Buffer {
  return encode(abi.route_peer, {
    addr: ipv4(n.address).readUInt32LE(0),
    key_id: n.keyId,
    ifindex: via?.ifindex ?? 0,
    src: via ? ipv4(via.src).readUInt32LE(0) : 0,
    mtu: via?.mtu ?? 0,
    slot: n.slot,
    // an IPv6 next hop (RFC 5549) stays the kernel's to find (0)
    gw: via && !via.gw.includes(':') ? ipv4(via.gw).readUInt32LE(0) : 0,
  });
}
