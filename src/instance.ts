// One loaded module instance's pinned parts, reached from its directory (`mod-<id>` in its hook's
// pin directory): its maps, opened once each, and its globals, read and written in place. The one
// way the registry (init, the periodic functions, flows), the module's host and the CLI reach an
// instance; close() closes what it opened.
import { join } from 'node:path';
import { ItmError } from './errors.js';
import { BpfMap, BpfObject } from './libbpf/index.js';
import type { Hook } from './module-def.js';
import { modPinDir, pinName } from './state.js';

const u32zero = Buffer.alloc(4);

/** an instance's directory in its hook's pin directory */
export const instanceDir = (hookDir: string, id: number): string => join(hookDir, `mod-${id}`);

export class ModuleInstance {
  private readonly maps = new Map<string, BpfMap>();
  private obj: BpfObject | undefined;

  /** `object`: the instance's BPF object file, where its globals are found (global() needs it) */
  constructor(
    readonly dir: string,
    private readonly object?: string,
  ) {}

  /** the instance with slot `id` at `hook` of device `ifindex`, in this namespace */
  static of(ifindex: number, hook: Hook, id: number, object?: string): ModuleInstance {
    return new ModuleInstance(modPinDir(ifindex, hook, id), object);
  }

  /** One of its pinned maps, opened at the first call and kept until close(). */
  open(map: string): BpfMap {
    let b = this.maps.get(map);
    if (!b) {
      b = BpfMap.fromPin(join(this.dir, pinName(map)));
      this.maps.set(map, b);
    }
    return b;
  }

  /** A global of the running instance (in .bss or .data), read and written in its pinned section
   * map (pinned as `_bss`, `_data`): where it lives comes from the object. */
  global(name: string): { section: string; size: number; read(): Buffer; write(value: Buffer): void } {
    if (!this.object) throw new ItmError(`no object to find the global '${name}' in`);
    this.obj ??= BpfObject.open(this.object);
    const info = this.obj.globalInfo(name);
    if (!info) throw new ItmError(`${this.object}: no global '${name}'`);
    const map = info.section;
    return {
      section: info.section,
      size: info.size,
      read: () =>
        this.open(map)
          .lookup(u32zero)!
          .subarray(info.offset, info.offset + info.size),
      write: (v: Buffer) => {
        const whole = this.open(map).lookup(u32zero)!;
        v.copy(whole, info.offset, 0, info.size);
        this.open(map).update(u32zero, whole);
      },
    };
  }

  close(): void {
    this.obj?.close();
    this.obj = undefined;
    for (const b of this.maps.values()) b.close();
    this.maps.clear();
  }
}
