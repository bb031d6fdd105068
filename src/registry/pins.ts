// A hook's pinned dispatcher: its programs and maps as bpffs keeps them, and its two chain tables
// (struct itm_ctl in bpf/include/itm/abi.h): each program runs on the one it was linked for.
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as abi from '../abi.js';
import { ItmError } from '../errors.js';
import { BpfError, BpfMap, BpfProgram, ifIndexToName, waitForRunningPrograms } from '../libbpf/index.js';

/** the dispatcher's maps a module's object shares (reuses) when it loads */
export const SHARED_MAPS = ['itm_progs', 'itm_segctl'] as const;
export const DISPATCHER_MAPS = [
  ...SHARED_MAPS,
  'itm_percpu',
  'itm_mbase',
  'itm_chain',
  'itm_ctl',
  'itm_src',
  'itm_dst',
  'itm_uctl',
  'itm_uflight',
  'itm_segs',
  'itm_layout',
] as const;
type DispatcherMap = (typeof DISPATCHER_MAPS)[number];

export const u32 = abi.u32;

/** A hook's pinned dispatcher: its programs and maps, opened from bpffs. */
export class HookPins {
  private constructor(
    readonly dir: string,
    readonly dispatch: BpfProgram,
    readonly maps: Record<DispatcherMap, BpfMap>,
  ) {}

  /** The id of the tree's dispatcher program, whatever the tree's layout. */
  static dispatchId(dir: string): number | undefined {
    if (!existsSync(join(dir, 'dispatch'))) return undefined;
    try {
      const p = BpfProgram.fromPin(join(dir, 'dispatch'));
      const id = p.id;
      p.close();
      return id;
    } catch {
      return undefined;
    }
  }

  /** The layout version of the tree in `dir` (enum itm_layout): undefined when there is no
   * dispatcher there, 1 for a tree of before the version was recorded. */
  static layoutOf(dir: string): number | undefined {
    if (!existsSync(join(dir, 'dispatch'))) return undefined;
    let m: BpfMap;
    try {
      m = BpfMap.fromPin(join(dir, 'itm_layout'));
    } catch (e) {
      if (e instanceof BpfError && e.code === 'ENOENT') return 1;
      throw e;
    }
    try {
      return m.lookup(u32(0))?.readUInt32LE(0) ?? 1;
    } finally {
      m.close();
    }
  }

  /** Opens the hook's dispatcher; undefined when there is none (or it is half made: `up` makes it
   * again). A tree of another layout version is never taken as this itm's: it is refused, saying
   * what to do. */
  static open(dir: string): HookPins | undefined {
    if (!existsSync(join(dir, 'dispatch'))) return undefined;
    const layout = HookPins.layoutOf(dir);
    if (layout !== undefined && layout !== abi.ITM_LAYOUT_VERSION) throw foreignLayout(dir, layout);
    const opened: BpfMap[] = [];
    try {
      const maps = {} as Record<DispatcherMap, BpfMap>;
      for (const m of DISPATCHER_MAPS) {
        const map = BpfMap.fromPin(join(dir, m));
        opened.push(map);
        maps[m] = map;
      }
      return new HookPins(dir, BpfProgram.fromPin(join(dir, 'dispatch')), maps);
    } catch (e) {
      for (const m of opened) m.close();
      if (e instanceof BpfError && e.code === 'ENOENT') return undefined; // half made: `up` rebuilds it
      throw e;
    }
  }

  close(): void {
    this.dispatch.close();
    for (const m of Object.values(this.maps)) m.close();
  }

  /** The chain the hook runs. */
  chain(): abi.ItmSlot[] {
    return this.table(this.active());
  }

  /** The slots of chain table `t`. */
  table(t: number): abi.ItmSlot[] {
    const c = abi.decode<abi.ItmChain>(abi.itm_chain, this.maps.itm_chain.lookup(u32(t & 1))!);
    return c.slots.slice(0, c.n);
  }

  /** Writes the idle chain table in full; returns its index, for the program linked for it
   * (compose). */
  writeIdle(slots: abi.ItmSlot[]): number {
    if (slots.length > abi.ITM_MAX_SLOTS) throw new ItmError(`at most ${abi.ITM_MAX_SLOTS} modules per hook`);
    const idle = this.active() ^ 1;
    this.maps.itm_chain.update(u32(idle), abi.encode(abi.itm_chain, { n: slots.length, slots }));
    return idle;
  }

  /** The table the hook's program runs on. */
  active(): number {
    return abi.decode<abi.ItmCtl>(abi.itm_ctl, this.maps.itm_ctl.lookup(u32(0))!).active & 1;
  }

  /** Records `table` as the one the hook's program runs on (after the program linked for it is
   * on the hook), then waits for the packets still on the one before. */
  activate(table: number): void {
    const ctl = abi.decode<abi.ItmCtl>(abi.itm_ctl, this.maps.itm_ctl.lookup(u32(0))!);
    this.maps.itm_ctl.update(u32(0), abi.encode(abi.itm_ctl, { ...ctl, active: table, generation: ctl.generation + 1 }));
    // packets already on the table just left may still read it: wait for them before anything
    // (the next change, or the removal of a module) touches what they could reach
    waitForRunningPrograms();
  }

  /** A slot's counters since its instance was loaded, summed over CPUs, with what reached it
   * (`seen`) and what matched its interest (`matched`) from what the dispatcher counts once per
   * packet (struct itm_mstats). */
  mstats(id: number): abi.ItmMstats & { seen: bigint } {
    const st = this.rawMstats(id);
    const base = this.maps.itm_mbase.lookup(u32(id));
    if (base) {
      const b = abi.decode<abi.ItmMstats>(abi.itm_mstats, base);
      for (const [k, v] of Object.entries(b) as Array<[keyof abi.ItmMstats, bigint | bigint[]]>) {
        if (Array.isArray(v)) (st[k] as bigint[]) = (st[k] as bigint[]).map((x, i) => x - v[i]!);
        else (st[k] as bigint) = (st[k] as bigint) - v;
      }
    }
    const matched = st.matched + st.classes.reduce((a, b) => a + b, 0n);
    return { ...st, matched, seen: st.skipped + matched };
  }

  /** Starts a slot's counters from here: what they hold now is its base (itm_mbase). */
  resetMstats(id: number): void {
    this.maps.itm_mbase.update(u32(id), abi.encode(abi.itm_mstats, this.rawMstats(id)));
  }

  private rawMstats(id: number): abi.ItmMstats {
    const at = abi.offsetOf(abi.itm_percpu, 'mstats') + id * abi.itm_mstats.size;
    return abi.sumPerCpu<abi.ItmMstats>(abi.itm_mstats, this.maps.itm_percpu, u32(0), at);
  }
  dstats(): abi.ItmDstats {
    return abi.sumDstats(this.maps.itm_percpu);
  }
}

/** The one-line refusal of a tree of another layout version, with what to do. */
export function foreignLayout(dir: string, layout: number): ItmError {
  const ifindex = Number(basename(dirname(dir)));
  const dev = ifIndexToName(ifindex) ?? `ifindex ${ifindex}`;
  const hook = basename(dir);
  const which = layout < abi.ITM_LAYOUT_VERSION ? 'an older' : 'a newer';
  return new ItmError(
    `${dev} ${hook} was set up by ${which} itm (pin layout ${layout}; this itm's is ${abi.ITM_LAYOUT_VERSION}), which it does not adopt`,
    `take it down with itmctl down --dev ${dev} --hook ${hook} (its modules go with it), then set it up again`,
  );
}
