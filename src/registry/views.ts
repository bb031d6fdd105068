// What runs where, for itmctl list and explain: per device and hook, the dispatcher's attachment
// and counters and the chain's modules with theirs; and which modules a flow would reach.
import { join } from 'node:path';
import * as abi from '../abi.js';
import { ItmError } from '../errors.js';
import { BpfMap, ifIndexToName } from '../libbpf/index.js';
import { instanceDir } from '../instance.js';
import { lpmKey, mismatch, type FlowQuery } from '../interest.js';
import { HOOKS, type Hook, type ParamValue } from '../module-def.js';
import { hookPinDir, listDeviceRecords, readDevice, withNamespaceLock } from '../state.js';
import { attachment, recordedKind, type AttachKind } from './attach.js';
import { enterNamespace } from './cleanup.js';
import { resolveDevice } from './devices.js';
import { HookPins, u32 } from './pins.js';
import { DEFAULT_PRIORITY } from './records.js';

export interface UserView {
  /** the host renews its deadline: packets reach it */
  serving: boolean;
  /** what cannot reach it is dropped, not let go past it (UserModuleDef.failClosed, UserDatapath.failClosed) */
  failClosed: boolean;
  diverted: number;
  inFlight: number;
  /** packets that went past it, by why */
  bypassed: { down: number; behind: number; size: number };
  /** what its host counted */
  received: number;
  accepted: number;
  modified: number;
  malformed: number;
}
export interface ModuleView {
  position: number;
  id: number;
  name: string;
  module: string;
  kind: 'kernel' | 'user';
  priority: number;
  interest: string;
  params: Record<string, ParamValue>;
  loadedAt: string;
  counters: { seen: number; matched: number; dropped: number; errors: number; classes: Record<string, number> };
  user?: UserView;
}
export interface HookView {
  hook: Hook;
  attached: boolean;
  progId?: number;
  /** how the dispatcher is attached: by a tcx link, a cls_bpf filter on clsact, or at xdp */
  attachment: AttachKind;
  /** tcx: the id of itm's link (while it is attached) */
  linkId?: number;
  /** at xdp: how the dispatcher is attached (native, generic) */
  mode?: string;
  packets: Record<string, number>;
  modules: ModuleView[];
  /** the hook's pins are of another itm's layout version (src/registry/pins.ts): nothing of it is read */
  foreignLayout?: number;
}
export interface DeviceView {
  dev: string;
  ifindex: number;
  hooks: HookView[];
}

const num = (x: bigint | undefined) => Number(x ?? 0n);

export function list(dev?: string): DeviceView[] {
  return withNamespaceLock(() => listLocked(dev));
}

function listLocked(dev?: string): DeviceView[] {
  enterNamespace(false);
  let recs = listDeviceRecords();
  if (dev !== undefined) {
    const ifindex = resolveDevice(dev, 'list');
    recs = recs.filter((r) => r.ifindex === ifindex);
  }
  return recs.map((rec) => {
    const hooks: HookView[] = [];
    for (const hook of HOOKS) {
      const hr = rec.hooks[hook];
      if (!hr) continue;
      const dir = hookPinDir(rec.ifindex, hook);
      const layout = HookPins.layoutOf(dir);
      const pins = layout === undefined || layout === abi.ITM_LAYOUT_VERSION ? HookPins.open(dir) : undefined;
      if (!pins) {
        const kind = attachment(rec.ifindex, hook, { recorded: recordedKind(hr) }).kind;
        const foreign = layout !== undefined && layout !== abi.ITM_LAYOUT_VERSION ? { foreignLayout: layout } : {};
        hooks.push({ hook, attached: false, attachment: kind, packets: {}, modules: [], ...foreign });
        continue;
      }
      try {
        const at = attachment(rec.ifindex, hook, { recorded: hook === 'xdp' ? undefined : recordedKind(hr) });
        const progId = at.current();
        const d = pins.dstats();
        const packets = Object.fromEntries(Object.entries(d).map(([k, v]) => [k, num(v as bigint)]));
        const byId = new Map(hr.modules.map((m) => [m.id, m]));
        const modules = pins.chain().map((s, position): ModuleView => {
          const m = byId.get(s.id);
          const st = pins.mstats(s.id);
          const classes: Record<string, number> = {};
          (st.classes ?? []).forEach((c, i) => {
            if (c) classes[i === abi.ITM_CLASS_BUCKETS - 1 ? `${i}+` : String(i)] = num(c);
          });
          const counters = { seen: num(st.seen), matched: num(st.matched), dropped: num(st.dropped), errors: num(st.errors), classes };
          const user = s.user ? userView(pins, s.id, st, counters) : undefined;
          return {
            position,
            id: s.id,
            name: m?.name ?? `module-${s.id}`,
            module: m?.module ?? '?',
            kind: s.user ? 'user' : 'kernel',
            priority: m?.priority ?? DEFAULT_PRIORITY,
            interest: m?.interest ?? '?',
            params: m?.params ?? {},
            loadedAt: m?.loadedAt ?? '',
            counters,
            ...(user ? { user } : {}),
          };
        });
        const mode = at.mode();
        const linkId = at.linkId();
        hooks.push({
          hook,
          attached: progId === pins.dispatch.id,
          attachment: at.kind,
          ...(linkId !== undefined ? { linkId } : {}),
          ...(progId !== undefined ? { progId } : {}),
          ...(mode ? { mode } : {}),
          packets,
          modules,
        });
      } finally {
        pins.close();
      }
    }
    return { dev: ifIndexToName(rec.ifindex) ?? rec.dev, ifindex: rec.ifindex, hooks };
  });
}

/** A user module's figures: the dispatcher's (diverted, bypassed, in flight) and its host's,
 * whose drops, errors and classes go into the module's counters like a kernel module's. */
function userView(pins: HookPins, id: number, st: abi.ItmMstats, counters: ModuleView['counters']): UserView {
  const uc = abi.decode<abi.ItmUctl>(abi.itm_uctl, pins.maps.itm_uctl.lookup(u32(id))!);
  const fl = abi.decode<abi.ItmUflight>(abi.itm_uflight, pins.maps.itm_uflight.lookup(u32(id))!);
  let us: abi.ItmUstats | undefined;
  try {
    const m = BpfMap.fromPin(join(instanceDir(pins.dir, id), 'ustats'));
    try {
      us = abi.decode<abi.ItmUstats>(abi.itm_ustats, m.lookup(u32(0))!);
    } finally {
      m.close();
    }
  } catch {
    /* not made yet */
  }
  if (us) {
    counters.dropped += num(us.dropped) + num(us.malformed);
    counters.errors += num(us.errors);
    us.classes.forEach((c, i) => {
      const k = i === abi.ITM_CLASS_BUCKETS - 1 ? `${i}+` : String(i);
      if (c) counters.classes[k] = (counters.classes[k] ?? 0) + num(c);
    });
  }
  const inFlight = Number(fl.sent - fl.back - uc.gone);
  return {
    serving: uc.deadline_ns > process.hrtime.bigint(),
    failClosed: (uc.flags & abi.ITM_U_FAIL_CLOSED) !== 0,
    diverted: num(st.diverted),
    inFlight: Math.max(0, inFlight),
    bypassed: { down: num(st.bypass_down), behind: num(st.bypass_behind), size: num(st.bypass_size) },
    received: num(us?.received),
    accepted: num(us?.accepted),
    modified: num(us?.modified),
    malformed: num(us?.malformed),
  };
}

export interface ExplainStep {
  position: number;
  name: string;
  sees: boolean;
  why?: string;
}
export interface ExplainView {
  dev: string;
  hook: Hook;
  steps: ExplainStep[];
}

export function explain(dev: string, flow: FlowQuery, hooks: readonly Hook[] = HOOKS): ExplainView[] {
  const ifindex = resolveDevice(dev, 'explain a flow on');
  return withNamespaceLock(() => explainLocked(dev, ifindex, flow, hooks));
}

function explainLocked(dev: string, ifindex: number, flow: FlowQuery, hooks: readonly Hook[]): ExplainView[] {
  enterNamespace(false);
  const rec = readDevice(ifindex);
  if (!rec || !Object.keys(rec.hooks).length) throw new ItmError(`${dev} is not set up (itmctl up --dev ${dev})`);
  const out: ExplainView[] = [];
  for (const hook of hooks) {
    const hr = rec.hooks[hook];
    if (!hr) continue;
    const pins = HookPins.open(hookPinDir(ifindex, hook));
    if (!pins) continue;
    try {
      const names = new Map(hr.modules.map((m) => [m.id, m.name]));
      const inTrie = (which: 'src' | 'dst', id: number, addr: Buffer) =>
        pins.maps[which === 'src' ? 'itm_src' : 'itm_dst'].lookup(lpmKey(id, addr, flow.family === 4 ? 32 : 128, flow.family)) !==
        undefined;
      const steps = pins.chain().map((s, position): ExplainStep => {
        const why = mismatch(s, flow, { hookIfindex: ifindex, egress: hook === 'tc-egress', inTrie });
        return { position, name: names.get(s.id) ?? `module-${s.id}`, sees: why === undefined, ...(why ? { why } : {}) };
      });
      out.push({ dev, hook, steps });
    } finally {
      pins.close();
    }
  }
  return out;
}
