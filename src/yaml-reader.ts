// A YAML (or JSON) document read field by field, each error an ItmError that names the file's line:
// what a module's configuration file is read with (route's topology), so every such file refuses
// bad input the same way, before anything is changed.
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import type { LineCounter, Node, Pair, YAMLMap, YAMLSeq } from 'yaml';
import { ItmError } from './errors.js';

// yaml is loaded when a document is first read, not on import: the SDK exports this class, so
// every module's declaration imports this file, and yaml's ~80 files cost about 25 ms of an
// `itmctl load` that reads no YAML (the same module as an `import 'yaml'`: its node build is CJS)
let lib: typeof Yaml | undefined;
const yaml = (): typeof Yaml => (lib ??= createRequire(import.meta.url)('yaml') as typeof Yaml);

/** A mapping's fields, by key, and the node they are in (for the line of a missing one). */
export interface Fields {
  node: YAMLMap;
  /** what the mapping is, in messages (`a neighbour`; `neighbour 'n1'` once its id is read) */
  what: string;
  pairs: Map<string, Pair>;
}

export class YamlReader {
  private readonly lines: LineCounter;
  /** the document's top value */
  readonly root: Node | null;

  /** `prefix` starts every message (`route: topology.yaml:4: ...`); none when empty (a node
   * file's messages start with the file: `node.yaml:12: qos: ...`) */
  constructor(
    text: string,
    readonly file: string,
    private readonly prefix: string,
  ) {
    this.lines = new (yaml().LineCounter)();
    const doc = yaml().parseDocument(text, { lineCounter: this.lines, uniqueKeys: true, prettyErrors: false });
    if (doc.errors.length) {
      const e = doc.errors[0]!;
      throw new ItmError(`${this.lead()}${file}:${this.lines.linePos(e.pos[0]).line}: ${e.message.split('\n')[0]}`);
    }
    this.root = doc.contents as Node | null;
  }

  /** `file:line` of a node (or of a pair's key), or the file alone */
  at(n: Node | Pair | null | undefined): string {
    let off: number | undefined;
    if (n && 'range' in n && n.range) off = n.range[0];
    else if (n && 'key' in n && yaml().isScalar(n.key)) off = n.key.range?.[0];
    return off === undefined ? this.file : `${this.file}:${this.lines.linePos(off).line}`;
  }

  fail(n: Node | Pair | null | undefined, msg: string): never {
    throw new ItmError(`${this.lead()}${this.at(n)}: ${msg}`);
  }

  private lead(): string {
    return this.prefix ? `${this.prefix}: ` : '';
  }

  /** A mapping's fields, unknown keys refused; `shape` says what the mapping holds. */
  map(n: unknown, allowed: readonly string[], what: string, shape: string): Fields {
    if (!yaml().isMap(n)) return this.fail(n as Node, `${what} is a mapping (${shape})`);
    const pairs = new Map<string, Pair>();
    for (const p of n.items) {
      const k = yaml().isScalar(p.key) ? String(p.key.value) : undefined;
      if (k === undefined || !allowed.includes(k))
        this.fail(p.key as Node, `unknown key '${k ?? '?'}' in ${what} (keys: ${allowed.join(', ')})`);
      pairs.set(k!, p);
    }
    return { node: n, what, pairs };
  }

  /** A list, or undefined when the key is absent. */
  seq(f: Fields, key: string, what: string): YAMLSeq | undefined {
    const v = f.pairs.get(key)?.value;
    if (v === undefined || v === null) return undefined;
    if (!yaml().isSeq(v)) return this.fail(v as Node, `'${key}' is a list${what ? ` of ${what}` : ''}`);
    return v;
  }

  /** A single value; a missing one is an error naming the mapping. */
  scalar(f: Fields, key: string): { v: unknown; node: Node } {
    const p = f.pairs.get(key);
    if (!p) return this.fail(f.node, `${f.what} has no '${key}'`);
    if (!yaml().isScalar(p.value)) return this.fail((p.value as Node) ?? p, `'${key}' must be a single value`);
    return { v: p.value.value, node: p.value };
  }

  /** Text, as written: a value of hex digits only would otherwise read as a number. */
  str(f: Fields, key: string): { v: string; node: Node } {
    const { v, node } = this.scalar(f, key);
    if (typeof v !== 'string' && typeof v !== 'number') return this.fail(node, `'${key}' must be text`);
    return { v: typeof v === 'number' ? ((node as { source?: string }).source ?? String(v)) : v, node };
  }

  /** An integer within [lo, hi], `dflt` when absent. */
  int(f: Fields, key: string, lo: number, hi: number, dflt: number): number {
    if (!f.pairs.has(key)) return dflt;
    const { v, node } = this.scalar(f, key);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi)
      return this.fail(node, `'${key}' must be an integer from ${lo} to ${hi}`);
    return v;
  }
}
