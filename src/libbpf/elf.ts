// Renaming inside a relocatable BPF object (ELF64, little-endian, as clang writes for -target bpf):
// global symbols, in the symbol table and in BTF, and data sections, in the section headers and
// in BTF's DATASEC records. What lets one module object be linked into one program several times
// (src/registry/compose.ts): each copy's globals and data sections under names of its own.
//
// Nothing is moved: the changed string tables (ELF's and BTF's) are written anew at the end of
// the file, the headers pointing at them; the old ones stay as unreferenced bytes.
import { ItmError } from '../errors.js';

const SHT_SYMTAB = 2;
const STB_GLOBAL = 1;
const STT_OBJECT = 1;
const STT_FUNC = 2;
const SHN_UNDEF = 0;
const SHDR_SIZE = 64;
const SYM_SIZE = 24;

const BTF_MAGIC = 0xeb9f;
const BTF_KIND_FUNC = 12;
const BTF_KIND_VAR = 14;
const BTF_KIND_DATASEC = 15;

interface Section {
  index: number;
  hdr: number; // offset of its header in the file
  name: number; // sh_name
  type: number;
  offset: number;
  size: number;
  link: number;
}

function cstr(b: Buffer, at: number): string {
  const end = b.indexOf(0, at);
  return b.toString('latin1', at, end < 0 ? b.length : end);
}

function sections(elf: Buffer, what: string): Section[] {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) {
    throw new ItmError(`${what}: not a 64-bit little-endian ELF object`);
  }
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shnum = elf.readUInt16LE(0x3c);
  const out: Section[] = [];
  for (let i = 0; i < shnum; i++) {
    const h = shoff + i * SHDR_SIZE;
    out.push({
      index: i,
      hdr: h,
      name: elf.readUInt32LE(h),
      type: elf.readUInt32LE(h + 4),
      offset: Number(elf.readBigUInt64LE(h + 24)),
      size: Number(elf.readBigUInt64LE(h + 32)),
      link: elf.readUInt32LE(h + 40),
    });
  }
  return out;
}

/** A string table being extended: existing offsets stay, new strings are appended once each. */
class StringTable {
  private readonly extra: Buffer[] = [];
  private size: number;
  private readonly added = new Map<string, number>();
  constructor(private readonly base: Buffer) {
    this.size = base.length;
  }
  add(s: string): number {
    const known = this.added.get(s);
    if (known !== undefined) return known;
    const at = this.size;
    const b = Buffer.from(`${s}\0`, 'latin1');
    this.extra.push(b);
    this.size += b.length;
    this.added.set(s, at);
    return at;
  }
  get changed(): boolean {
    return this.extra.length > 0;
  }
  bytes(): Buffer {
    return Buffer.concat([this.base, ...this.extra]);
  }
}

/** The names of the global symbols the object defines (functions and variables, maps included). */
export function definedGlobals(elf: Buffer, what = 'object'): string[] {
  const secs = sections(elf, what);
  const symtab = secs.find((s) => s.type === SHT_SYMTAB);
  if (!symtab) return [];
  const strtab = secs[symtab.link]!;
  const out: string[] = [];
  for (let at = symtab.offset; at + SYM_SIZE <= symtab.offset + symtab.size; at += SYM_SIZE) {
    const info = elf[at + 4]!;
    const type = info & 0xf;
    if (info >> 4 !== STB_GLOBAL || (type !== STT_OBJECT && type !== STT_FUNC) || elf.readUInt16LE(at + 6) === SHN_UNDEF) continue;
    out.push(cstr(elf, strtab.offset + elf.readUInt32LE(at)));
  }
  return out;
}

/** BTF with FUNC and VAR records of `symbols` and DATASEC records of `sections` renamed. */
function renameBtf(btf: Buffer, symbols: ReadonlyMap<string, string>, secs: ReadonlyMap<string, string>, what: string): Buffer {
  if (btf.readUInt16LE(0) !== BTF_MAGIC) throw new ItmError(`${what}: its .BTF section is not BTF`);
  const hdrLen = btf.readUInt32LE(4);
  const typeOff = btf.readUInt32LE(8);
  const typeLen = btf.readUInt32LE(12);
  const strOff = btf.readUInt32LE(16);
  const strLen = btf.readUInt32LE(20);
  if (strOff < typeOff + typeLen) throw new ItmError(`${what}: its BTF has strings before types, which itm does not rename`);
  const out = Buffer.from(btf.subarray(0, hdrLen + strOff + strLen));
  const strs = new StringTable(out.subarray(hdrLen + strOff));
  const name = (off: number) => cstr(out, hdrLen + strOff + off);
  let at = hdrLen + typeOff;
  const end = at + typeLen;
  while (at < end) {
    const info = out.readUInt32LE(at + 4);
    const kind = (info >>> 24) & 0x1f;
    const vlen = info & 0xffff;
    const table = kind === BTF_KIND_DATASEC ? secs : kind === BTF_KIND_FUNC || kind === BTF_KIND_VAR ? symbols : undefined;
    const to = table?.get(name(out.readUInt32LE(at)));
    if (to !== undefined) out.writeUInt32LE(strs.add(to), at);
    at += 12 + btfExtra(kind, vlen, what);
  }
  if (!strs.changed) return out;
  const s = strs.bytes();
  const head = Buffer.from(out.subarray(0, hdrLen + strOff));
  head.writeUInt32LE(s.length, 20);
  return Buffer.concat([head, s]);
}

/** the bytes that follow a BTF type's 12-byte header */
function btfExtra(kind: number, vlen: number, what: string): number {
  switch (kind) {
    case 1: // INT
    case 14: // VAR
    case 17: // DECL_TAG
      return 4;
    case 3: // ARRAY
      return 12;
    case 4: // STRUCT
    case 5: // UNION
    case 15: // DATASEC
    case 19: // ENUM64
      return 12 * vlen;
    case 6: // ENUM
    case 13: // FUNC_PROTO
      return 8 * vlen;
    case 2: // PTR
    case 7: // FWD
    case 8: // TYPEDEF
    case 9: // VOLATILE
    case 10: // CONST
    case 11: // RESTRICT
    case 12: // FUNC
    case 16: // FLOAT
    case 18: // TYPE_TAG
      return 0;
    default:
      throw new ItmError(`${what}: its BTF has a type of kind ${kind}, which itm does not know`);
  }
}

/**
 * A copy of the object with global symbols renamed (`symbols`: old → new, in the symbol table and
 * in BTF) and sections renamed (`sections`: old → new, in the section headers and in BTF's DATASEC
 * records). A symbol named in `symbols` that the object lacks is an error; a section, not.
 */
export function renameInObject(
  elf: Buffer,
  symbols: ReadonlyMap<string, string>,
  secRenames: ReadonlyMap<string, string>,
  what = 'object',
): Buffer {
  const secs = sections(elf, what);
  const out = Buffer.from(elf);
  const shstrndx = elf.readUInt16LE(0x3e);
  const tables = new Map<number, StringTable>();
  const table = (i: number) => {
    let t = tables.get(i);
    if (!t) {
      const s = secs[i]!;
      t = new StringTable(elf.subarray(s.offset, s.offset + s.size));
      tables.set(i, t);
    }
    return t;
  };
  const shstr = secs[shstrndx]!;
  for (const s of secs) {
    const to = secRenames.get(cstr(elf, shstr.offset + s.name));
    if (to !== undefined) out.writeUInt32LE(table(shstrndx).add(to), s.hdr);
  }
  const symtab = secs.find((s) => s.type === SHT_SYMTAB);
  const seen = new Set<string>();
  if (symtab) {
    const strtab = secs[symtab.link]!;
    for (let at = symtab.offset; at + SYM_SIZE <= symtab.offset + symtab.size; at += SYM_SIZE) {
      if (elf[at + 4]! >> 4 !== STB_GLOBAL) continue;
      const name = cstr(elf, strtab.offset + elf.readUInt32LE(at));
      const to = symbols.get(name);
      if (to === undefined) continue;
      seen.add(name);
      out.writeUInt32LE(table(symtab.link).add(to), at);
    }
  }
  for (const s of symbols.keys()) if (!seen.has(s)) throw new ItmError(`${what}: it defines no global '${s}'`);
  const tail: Buffer[] = [];
  let size = out.length;
  const place = (s: Section, bytes: Buffer) => {
    const pad = (8 - (size % 8)) % 8;
    tail.push(Buffer.alloc(pad), bytes);
    size += pad;
    out.writeBigUInt64LE(BigInt(size), s.hdr + 24);
    out.writeBigUInt64LE(BigInt(bytes.length), s.hdr + 32);
    size += bytes.length;
  };
  for (const [i, t] of tables) if (t.changed) place(secs[i]!, t.bytes());
  const btf = secs.find((s) => cstr(elf, shstr.offset + s.name) === '.BTF');
  if (btf) {
    const renamed = renameBtf(elf.subarray(btf.offset, btf.offset + btf.size), symbols, secRenames, what);
    if (renamed.length !== btf.size || !renamed.equals(elf.subarray(btf.offset, btf.offset + btf.size))) place(btf, renamed);
  }
  return Buffer.concat([out, ...tail]);
}
