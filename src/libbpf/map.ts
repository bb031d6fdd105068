import { BPF_MAP_FLAG, BPF_MAP_TYPE } from './constants.js';
import { BpfError } from './errors.js';
import { adopt, FdHandle } from './fd.js';
import { native, type NativeMapInfo } from './native.js';

export interface MapCreateOptions {
  /** A BPF_MAP_TYPE value. */
  type: number;
  name?: string;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  /** BPF_F_* map flags. */
  flags?: number;
  /** For ARRAY_OF_MAPS / HASH_OF_MAPS: a map of the kind the outer map will hold. */
  innerMap?: { fd: number };
}

export type MapUpdateFlag = 'any' | 'noexist' | 'exist';

const UPDATE_FLAGS: Record<MapUpdateFlag, number> = { any: 0, noexist: 1, exist: 2 };

const PER_CPU_TYPES: ReadonlySet<number> = new Set([
  BPF_MAP_TYPE.PERCPU_HASH,
  BPF_MAP_TYPE.PERCPU_ARRAY,
  BPF_MAP_TYPE.LRU_PERCPU_HASH,
  BPF_MAP_TYPE.PERCPU_CGROUP_STORAGE,
]);

let possibleCpus: number | undefined;

function cpuCount(): number {
  possibleCpus ??= native.numPossibleCpus();
  return possibleCpus;
}

export class BpfMap extends FdHandle {
  readonly id: number;
  /** The libbpf name when opened from an object, else the kernel's name (at most 15 bytes). */
  readonly name: string;
  /** A BPF_MAP_TYPE value. */
  readonly type: number;
  readonly keySize: number;
  readonly valueSize: number;
  readonly maxEntries: number;
  readonly flags: number;
  /**
   * Per-CPU maps exchange one slot per possible CPU, each slot valueSize rounded up to 8 bytes,
   * in every lookup/update/entries call.
   */
  readonly perCpu: boolean;
  /** Size of the value buffers lookup() returns and update() expects. */
  readonly valueBufferSize: number;

  private constructor(fd: number, info: NativeMapInfo, name?: string) {
    super(fd);
    this.id = info.id;
    this.name = name ?? info.name;
    this.type = info.type;
    this.keySize = info.keySize;
    this.valueSize = info.valueSize;
    this.maxEntries = info.maxEntries;
    this.flags = info.flags;
    this.perCpu = PER_CPU_TYPES.has(info.type);
    this.valueBufferSize = this.perCpu ? Math.ceil(info.valueSize / 8) * 8 * cpuCount() : info.valueSize;
  }

  /** @internal Takes ownership of `fd`. */
  static adoptFd(fd: number, name?: string): BpfMap {
    return adopt(fd, (f) => new BpfMap(f, native.mapInfo(f), name));
  }

  /** A new handle on a map the caller keeps its own fd for (the fd is duplicated). */
  static fromFd(fd: number): BpfMap {
    return BpfMap.adoptFd(native.dupFd(fd));
  }

  static fromPin(path: string): BpfMap {
    return BpfMap.adoptFd(native.objGet(path));
  }

  static fromId(id: number): BpfMap {
    return BpfMap.adoptFd(native.mapFdById(id));
  }

  static create(opts: MapCreateOptions): BpfMap {
    const fd = native.mapCreate(
      opts.type,
      opts.name ?? '',
      opts.keySize,
      opts.valueSize,
      opts.maxEntries,
      opts.flags ?? 0,
      opts.innerMap?.fd ?? 0,
    );
    return BpfMap.adoptFd(fd, opts.name);
  }

  protected describe(): string {
    return `map "${this.name}"`;
  }

  /** The value, or undefined if the key is absent. */
  lookup(key: Buffer): Buffer | undefined {
    const fd = this.liveFd('bpf_map_lookup_elem');
    return native.mapLookup(this.describe(), fd, key, this.keySize, this.valueBufferSize);
  }

  update(key: Buffer, value: Buffer, flags: MapUpdateFlag = 'any'): void {
    const fd = this.liveFd('bpf_map_update_elem');
    const f = UPDATE_FLAGS[flags];
    if (f === undefined) throw new TypeError(`unknown map update flag: ${String(flags)}`);
    native.mapUpdate(this.describe(), fd, key, value, this.keySize, this.valueBufferSize, f);
  }

  /** True if an element was deleted, false if the key was absent. */
  delete(key: Buffer): boolean {
    const fd = this.liveFd('bpf_map_delete_elem');
    return native.mapDelete(this.describe(), fd, key, this.keySize);
  }

  /** A snapshot of the keys; keys deleted during the walk may or may not appear, none twice. */
  keys(): Buffer[] {
    const fd = this.liveFd('bpf_map_get_next_key');
    return native.mapKeys(this.describe(), fd, this.keySize, this.maxEntries);
  }

  /** A snapshot of [key, value] pairs, batched where the kernel supports it for this map type. */
  entries(): Array<[Buffer, Buffer]> {
    const fd = this.liveFd('bpf_map_lookup_batch');
    return native.mapEntries(this.describe(), fd, this.keySize, this.valueBufferSize, this.maxEntries);
  }

  /**
   * The memory of an array map made with BPF_F_MMAPABLE, shared with the kernel and with every
   * process that maps it: entry i at i * stride (valueSize rounded up to 8). Read and write it in
   * place; for words other writers change at once, use atomicAddU64 and atomicRaiseU64. It stays
   * mapped while the buffer is referenced, after close() too.
   */
  mmap(): { mem: Buffer; stride: number } {
    if (this.type !== BPF_MAP_TYPE.ARRAY || !(this.flags & BPF_MAP_FLAG.MMAPABLE)) {
      throw new BpfError(`${this.describe()}: only an array map made with BPF_F_MMAPABLE can be mapped`, {
        code: 'EINVAL',
        errno: 22,
        step: 'mmap',
      });
    }
    const stride = Math.ceil(this.valueSize / 8) * 8;
    return { mem: native.mapMmap(this.describe(), this.liveFd('mmap'), stride * this.maxEntries), stride };
  }

  pin(path: string): void {
    native.objPin(this.describe(), this.liveFd('bpf_obj_pin'), path);
  }
}

/** Adds `delta` to the 8-byte word at `off` of shared memory (a mapped map), atomically, as the
 * kernel's __sync_fetch_and_add does; returns the value before. */
export function atomicAddU64(mem: Buffer, off: number, delta: bigint): bigint {
  return native.atomicAddU64(mem, off, delta);
}

/** Raises the 8-byte word at `off` of shared memory to `value` if it is below it, atomically
 * (compare-and-swap); true if it did. */
export function atomicRaiseU64(mem: Buffer, off: number, value: bigint): boolean {
  return native.atomicRaiseU64(mem, off, value);
}
