// The devices the registry acts on: names to indexes, whether a device carries Ethernet, what tc
// filters are on it, and the names of programs found attached.
import { spawnSync } from 'node:child_process';
import { ItmError } from '../errors.js';
import { BpfError, BpfProgram, ifIndexToName, ifNameToIndex } from '../libbpf/index.js';

export function resolveDevice(dev: string, action: string): number {
  try {
    return ifNameToIndex(dev);
  } catch (e) {
    if (e instanceof BpfError && e.code === 'ENODEV') throw new ItmError(`cannot ${action} ${dev}: no such device`);
    throw e;
  }
}

/** itm parses Ethernet frames: a device whose frames start elsewhere (tun, wireguard, loopback)
 * would have its packets misread. */
export function requireEthernet(dev: string): void {
  const r = spawnSync('ip', ['-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
  if (r.error) throw new ItmError(`cannot run ip: ${r.error.message}`);
  let type: string | undefined;
  try {
    type = (JSON.parse(r.stdout) as Array<{ link_type?: string }>)[0]?.link_type;
  } catch { /* fall through */ }
  if (type !== 'ether') throw new ItmError(`cannot set up ${dev}: it is not an Ethernet device (link type ${type ?? 'unknown'}); itm parses Ethernet frames`);
}

/** Whether any filter is left on the device's clsact; when tc cannot tell, the answer is yes, so
 * that the qdisc (and whatever it holds) is never removed on a guess. */
export function tcFiltersRemain(ifindex: number): boolean {
  // libbpf cannot list filters; ask tc, which shows filters of any kind
  const dev = ifIndexToName(ifindex);
  if (!dev) return true;
  for (const dir of ['ingress', 'egress']) {
    const r = spawnSync('tc', ['filter', 'show', 'dev', dev, dir], { encoding: 'utf8' });
    if (r.error || r.status !== 0 || r.stdout.trim()) return true;
  }
  return false;
}

/** The name of a program by id, if it still exists. */
export function progName(id: number): string | undefined {
  try {
    const p = BpfProgram.fromId(id);
    const n = p.name;
    p.close();
    return n;
  } catch {
    return undefined;
  }
}
