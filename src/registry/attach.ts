// How a hook's dispatcher is attached to its device: at xdp, the device's one XDP program; at
// tc-ingress and tc-egress, a cls_bpf filter at itm's handle and priority on clsact. Both behind
// one interface, so setting a hook up, repairing it and taking it down is written once.
import { BpfError, tc, xdp } from '../libbpf/index.js';
import { TC_HANDLE, TC_PRIORITY } from '../divert.js';
import type { Hook } from '../module-def.js';
import { log } from '../log.js';

export interface Attachment {
  /** the program at itm's place on the hook, if there is one */
  current(): number | undefined;
  /** the place exists (tc: the clsact qdisc); true if this call made it */
  prepare(): boolean;
  /** without `replace`, fails rather than evict a program another tool put there meanwhile */
  attach(fd: number, replace: boolean): void;
  detach(): void;
  /** what a person is told when a program that is not itm's holds the place */
  taken(id: number, name: string | undefined): string;
  /** how it is attached, where there is a choice (xdp: native or generic) */
  mode(): string | undefined;
}

const FILTER = { handle: TC_HANDLE, priority: TC_PRIORITY };

export const tcPoint = (hook: Hook) => (hook === 'tc-ingress' ? 'ingress' : 'egress');

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

export function attachment(ifindex: number, hook: Hook): Attachment {
  if (hook === 'xdp') {
    return {
      current: () => xdp.query(ifindex)?.progId,
      prepare: () => false,
      attach: (fd, replace) => attachXdp(ifindex, fd, replace),
      detach: () => xdp.detach(ifindex),
      taken: (id, name) => `another XDP program (id ${id}, ${name ?? '?'}) is attached to it`,
      mode: () => xdp.query(ifindex)?.mode,
    };
  }
  const point = tcPoint(hook);
  return {
    current: () => tc.query(ifindex, point, FILTER)?.progId,
    prepare: () => tc.hookCreate(ifindex, point).created,
    attach: (fd, replace) => {
      tc.attach(ifindex, point, fd, { ...FILTER, replace });
    },
    detach: () => tc.detach(ifindex, point, FILTER),
    taken: () => `another filter holds tc handle 0x${TC_HANDLE.toString(16)} pref ${TC_PRIORITY}`,
    mode: () => undefined,
  };
}
