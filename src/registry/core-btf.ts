// The kernel BTF a hook's composed program is loaded with. libbpf resolves an object's CO-RE
// relocations (the packet headers and __sk_buff fields of vmlinux.h) against the kernel's BTF,
// which it reads whole from /sys/kernel/btf/vmlinux (5 MB, ~125k types) and searches at every
// load: about 15 ms of each of a hook's loads, a third of the load of a chain with qos. Given
// instead the few kernel types an object's relocations name (`bpftool gen min_core_btf`, what
// BTFHub ships for kernels without BTF), it resolves them to the same offsets at once.
//
// Each object's minimal BTF is made once per boot and per object content, kept in STATE_DIR/btf
// (the kernel's BTF cannot change without a reboot), and a module instance's copy carries its
// module's beside it (`<copy>.btf`). A chain's is made from the dispatcher and its instances
// together, once per boot and set of modules (BTFGen keeps only the members an object reads, so
// two objects' minimal BTFs are not simply merged: a struct two of them read has both's members).
// Whatever is missing (no bpftool, no kernel BTF, a copy made without it) leaves libbpf to read
// the kernel's, as before.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { log } from '../log.js';
import { STATE_DIR } from '../state.js';

const KERNEL_BTF = '/sys/kernel/btf/vmlinux';

let bootId: string | undefined;
function boot(): string {
  bootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  return bootId;
}

/** `bpftool gen min_core_btf` of `objects` into STATE_DIR/btf/<key>.btf, once; or undefined. */
function minimal(key: string, objects: string[]): string | undefined {
  const dir = join(STATE_DIR, 'btf');
  const file = join(dir, `${key}.btf`);
  if (existsSync(file)) return file;
  if (!existsSync(KERNEL_BTF)) return undefined;
  mkdirSync(dir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  const r = spawnSync('bpftool', ['gen', 'min_core_btf', KERNEL_BTF, tmp, ...objects], { encoding: 'utf8', timeout: 10_000 });
  if (r.status !== 0 || !existsSync(tmp)) {
    rmSync(tmp, { force: true });
    log.debug({ objects, err: r.error?.message ?? r.stderr.trim() }, 'no minimal BTF: libbpf reads the kernel BTF');
    return undefined;
  }
  renameSync(tmp, file);
  return file;
}

const hash = (...parts: Array<string | Buffer>): string => {
  const h = createHash('sha256').update(boot());
  for (const p of parts) h.update('\0').update(p);
  return h.digest('hex').slice(0, 32);
};

/** The minimal kernel BTF of an object's CO-RE relocations (made if need be), or undefined. */
export function objectBtf(object: string): string | undefined {
  try {
    return minimal(hash(readFileSync(object)), [object]);
  } catch (e) {
    log.debug({ object, err: e }, 'no minimal BTF: libbpf reads the kernel BTF');
    return undefined;
  }
}

/** Where an instance's copy of its module's object keeps its module's minimal BTF. */
export function copyBtf(copy: string): string {
  return `${copy}.btf`;
}

/** Puts the minimal BTF of `moduleObject` beside its instance's copy (none when there is none). */
export function writeCopyBtf(moduleObject: string, copy: string): void {
  const btf = objectBtf(moduleObject);
  const dest = copyBtf(copy);
  rmSync(dest, { force: true });
  if (btf) copyFileSync(btf, dest);
}

/** The BTF for a link of `dispatcher` with the instance copies `copies`: the minimal one of them
 * all (one bpftool run over the dispatcher and a copy of each module, the first time a chain has
 * that set of modules; a type two of them use has the members of both), or undefined (the
 * kernel's, then) if a copy has none. Copies of one module have the same relocations, and their
 * minimal BTFs say which: the set's key is made of those. */
export function chainBtf(dispatcher: string, copies: string[]): string | undefined {
  try {
    const own = objectBtf(dispatcher);
    if (!own) return undefined;
    if (!copies.length) return own;
    const byModule = new Map<string, string>();
    for (const c of copies) {
      const f = copyBtf(c);
      if (!existsSync(f)) return undefined;
      const k = readFileSync(f).toString('base64');
      if (!byModule.has(k)) byModule.set(k, c);
    }
    const keys = [...byModule.keys()].sort();
    return minimal(hash(readFileSync(own), ...keys), [dispatcher, ...keys.map((k) => byModule.get(k)!)]);
  } catch (e) {
    log.debug({ err: e }, 'no minimal BTF for the chain: libbpf reads the kernel BTF');
    return undefined;
  }
}
