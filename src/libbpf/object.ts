import { BpfError } from './errors.js';
import { BpfMap } from './map.js';
import { native, type NativeBpfObject } from './native.js';
import { BpfProgram } from './program.js';

export interface GlobalInfo {
  /** The data section holding the variable: '.rodata', '.data', '.bss' or a custom '.data.*'. */
  section: string;
  offset: number;
  size: number;
}

/**
 * An ELF BPF object as libbpf sees it. Open, adjust (globals, map sizes, shared maps), load,
 * then take program and map handles; those own duplicated fds and stay valid after close().
 * An object that is garbage-collected without close() is closed by the addon's finalizer.
 */
export class BpfObject {
  readonly path: string;
  readonly name: string;
  #obj: NativeBpfObject;

  private constructor(path: string, obj: NativeBpfObject) {
    this.path = path;
    this.#obj = obj;
    this.name = obj.name();
  }

  /** Parses the object file; needs no privileges. `btf`: a raw BTF file to resolve the object's
   * CO-RE relocations against, in place of the kernel's (which libbpf then need not read). */
  static open(path: string, opts: { btf?: string } = {}): BpfObject {
    return new BpfObject(path, opts.btf ? new native.NativeBpfObject(path, opts.btf) : new native.NativeBpfObject(path));
  }

  programNames(): string[] {
    return this.#obj.programNames();
  }

  /** Includes the internal maps (.rodata, .data, .bss) under libbpf's names for them. */
  mapNames(): string[] {
    return this.#obj.mapNames();
  }

  /** Sets a global variable's initial value by its C name; before load() only. */
  setGlobal(name: string, value: Buffer): void {
    this.#obj.setGlobal(name, value);
  }

  globalInfo(name: string): GlobalInfo | undefined {
    return this.#obj.globalInfo(name);
  }

  /** Makes the object use an existing map instead of creating its own; before load() only. */
  reuseMap(mapName: string, map: BpfMap): void {
    if (map.closed) {
      throw new BpfError(`${this.path}: reuse map "${mapName}": the given map handle is closed (EBADF)`, {
        errno: 9,
        code: 'EBADF',
        step: 'bpf_map__reuse_fd',
      });
    }
    this.#obj.reuseMap(mapName, map.fd);
  }

  setMaxEntries(mapName: string, n: number): void {
    this.#obj.setMaxEntries(mapName, n);
  }

  /** Creates the maps and loads every program; failures carry libbpf's output as `err.log`. */
  load(): void {
    this.#obj.load();
  }

  /** A new handle (own fd) on a loaded program, by its C function name. */
  program(name: string): BpfProgram {
    return BpfProgram.adoptFd(this.#obj.programFd(name), name);
  }

  /** A new handle (own fd) on a created map, by its libbpf name or, for internal maps, section. */
  map(name: string): BpfMap {
    const { fd, name: mapName } = this.#obj.mapFd(name);
    return BpfMap.adoptFd(fd, mapName);
  }

  /** Idempotent; handles already taken from the object stay open. */
  /** Whether load() loads the program (all do by default); before load() only. */
  setAutoload(name: string, on: boolean): void {
    this.#obj.setAutoload(name, on);
  }

  close(): void {
    this.#obj.close();
  }
}

/** libbpf's static linker: writes `out`, one object of `inputs`, their globals resolved (a strong
 * definition wins over weak ones, as `bpftool gen object` links). */
export function linkObjects(out: string, inputs: string[]): void {
  native.linkObjects(out, inputs);
}
