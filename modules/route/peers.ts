// A neighbour's entry in route_peers: where it is, and the underlay route to its address as this
// namespace's FIB has it (asked of `ip`, at load and then by the control plane every period).
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { encode } from '../../src/sdk.js';
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

interface RouteJson {
  dev?: string;
  prefsrc?: string;
  gateway?: string;
  type?: string;
  flags?: string[];
}
interface LinkJson {
  ifindex: number;
  ifname: string;
  mtu: number;
  flags?: string[];
}

/** The underlay from `ip -j route get` and `ip -j link show` output: none for a route that is not
 * unicast, or over a device without carrier (no LOWER_UP: the other end is gone). */
function underlayOf(addr: string, routeJson: string, links: LinkJson[]): Underlay | undefined {
  const [r] = JSON.parse(routeJson) as RouteJson[];
  if (!r?.dev || !r.prefsrc || (r.type && r.type !== 'unicast') || r.flags?.includes('linkdown')) return undefined;
  const l = links.find((x) => x.ifname === r.dev);
  return l && (!l.flags || l.flags.includes('LOWER_UP'))
    ? { ifindex: l.ifindex, dev: l.ifname, src: r.prefsrc, mtu: l.mtu, gw: r.gateway ?? addr }
    : undefined;
}

/** The underlay routes to several addresses now (undefined: none), the links read once. */
export function underlayRoutesNow(addrs: string[]): Array<Underlay | undefined> {
  const run = (args: string[]) => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const links = JSON.parse(run(['-j', 'link', 'show'])) as LinkJson[];
  return addrs.map((a) => {
    try {
      return underlayOf(a, run(['-j', 'route', 'get', a]), links);
    } catch {
      return undefined; // unreachable: `ip route get` fails
    }
  });
}

const execAsync = promisify(execFile);

/** The same, without blocking the event loop (the control plane's). */
export async function underlayRoutes(addrs: string[]): Promise<Array<Underlay | undefined>> {
  const links = JSON.parse((await execAsync('ip', ['-j', 'link', 'show'])).stdout) as LinkJson[];
  return Promise.all(
    addrs.map(async (a) => {
      try {
        return underlayOf(a, (await execAsync('ip', ['-j', 'route', 'get', a])).stdout, links);
      } catch {
        return undefined;
      }
    }),
  );
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
