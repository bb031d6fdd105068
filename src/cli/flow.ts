// The flow `itmctl explain` is asked about, as typed: its own file, so that the CLI's start does not
// load the address and protocol parsers it needs (explain's handler imports it).
import { ItmError } from '../errors.js';
import { protoNumber, type FlowQuery } from '../interest.js';
import { addrToBytes } from '../netaddr.js';

/** `proto=udp,src=10.0.0.1,dst=10.0.0.2,sport=1234,dport=5001[,indev=eth1][,origin=local]` */
export function parseFlow(spec: string, resolveDev: (name: string) => number): FlowQuery {
  const kv: Record<string, string> = {};
  for (const part of spec.split(/[,\s]+/).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new ItmError(`invalid flow '${part}': expected key=value (proto, src, dst, sport, dport, indev, origin)`);
    const k = part.slice(0, eq);
    if (!['proto', 'src', 'dst', 'sport', 'dport', 'indev', 'origin'].includes(k)) throw new ItmError(`invalid flow key '${k}'`);
    kv[k] = part.slice(eq + 1);
  }
  for (const k of ['proto', 'src', 'dst'])
    if (!kv[k]) throw new ItmError(`the flow needs ${k}= (e.g. proto=udp,src=10.0.0.1,dst=10.0.0.2,sport=1234,dport=5001)`);
  const proto = protoNumber(kv.proto!);
  if (proto === undefined) throw new ItmError(`invalid flow proto=${kv.proto}`);
  const src = addrToBytes(kv.src!);
  const dst = addrToBytes(kv.dst!);
  if (!src) throw new ItmError(`invalid flow src=${kv.src}: not an IP address`);
  if (!dst) throw new ItmError(`invalid flow dst=${kv.dst}: not an IP address`);
  if (src.family !== dst.family) throw new ItmError('invalid flow: src and dst are of different families');
  const port = (k: string) => {
    if (kv[k] === undefined) return 0;
    const n = Number(kv[k]);
    if (!/^\d+$/.test(kv[k]!) || n > 65535) throw new ItmError(`invalid flow ${k}=${kv[k]}: ports are 0-65535`);
    return n;
  };
  if (kv.origin !== undefined && kv.origin !== 'local' && kv.origin !== 'forwarded')
    throw new ItmError(`invalid flow origin=${kv.origin}: local or forwarded`);
  return {
    family: src.family,
    proto,
    src: src.addr,
    dst: dst.addr,
    sport: port('sport'),
    dport: port('dport'),
    ...(kv.indev !== undefined ? { indev: resolveDev(kv.indev) } : {}),
    ...(kv.origin !== undefined ? { local: kv.origin === 'local' } : {}),
  };
}
