// The devices the registry acts on: names to indexes, whether a device carries Ethernet, what tc
// filters are on it, and the names of programs found attached.
import { ItmError } from '../errors.js';
import { ARPHRD, BpfError, BpfProgram, ifNameToIndex, linkType, linkTypeName, tcFilterCount } from '../libbpf/index.js';

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
  let type: number | undefined;
  try {
    type = linkType(dev);
  } catch {
    /* said below as unknown */
  }
  if (type !== ARPHRD.ETHER) {
    throw new ItmError(
      `cannot set up ${dev}: it is not an Ethernet device (link type ${type === undefined ? 'unknown' : linkTypeName(type)}); itm parses Ethernet frames`,
    );
  }
}

/** Whether any filter, of any kind, is left on the device's clsact; when that cannot be told, the
 * answer is yes, so that the qdisc (and whatever it holds) is never removed on a guess. */
export function tcFiltersRemain(ifindex: number): boolean {
  try {
    return tcFilterCount(ifindex, 'ingress') > 0 || tcFilterCount(ifindex, 'egress') > 0;
  } catch {
    return true;
  }
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
