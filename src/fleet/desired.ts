// A node's desired state from what a cluster holds (itmd --etcd): its node document (the key
// `nodes/<id>`, a node file as `itmctl apply` reads it) and the overlays it is a member of (keys
// `overlays/<name>`), each of which adds a route instance named after the overlay on the devices
// the overlay gives the member, with the member's own view of the overlay as its topology.
//
// The views are written into a directory named by their content (`<run>/fleet/<cluster>/<node>/
// <hash>/<overlay>.yaml`, root's only: they hold the pairs' keys), so that a changed view is a
// changed topology parameter, which route takes in place (ParamSpec.live), and an unchanged one
// is no change at all. A node document's relative paths start there too.
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { memberView, parseOverlay, type Overlay } from '../../modules/route/overlay.js';
import { loadTopology } from '../../modules/route/topology.js';
import { readNode } from '../apply/document.js';
import { instanceKey, type DeviceState, type Instance, type NodeState } from '../apply/state.js';
import { ItmError } from '../errors.js';
import { HOOKS } from '../module-def.js';
import { RUN_DIR } from '../state.js';

export const FLEET_DIR = join(RUN_DIR, 'fleet');

/** A value as it came from the store: its key, for messages, and its text. */
export interface Value {
  key: string;
  text: string;
}

/** The directory of a node's views (one subdirectory per content). */
export const viewsDir = (cluster: string, node: string): string => join(FLEET_DIR, cluster, node);

/** The neighbours' slots in the view of an overlay that an instance runs now (read from its
 * topology file), so that a new view keeps them. */
export function slotsOf(topologyFile: string): Map<string, number> {
  try {
    return new Map(loadTopology(topologyFile).neighbours.map((n) => [n.id, n.slot]));
  } catch {
    return new Map();
  }
}

/** Checks one overlay's value alone (a bad one is refused, its last good value kept). */
export function checkOverlay(v: Value, name: string): Overlay {
  return parseOverlay(v.text, name, v.key);
}

/**
 * The state a node is to have: its document, with each overlay it is a member of added. `slots`
 * gives, per overlay, the neighbours' slots of the view running now. Writes the views (the one
 * thing it changes) and returns the directory they are in. Throws an ItmError naming the key
 * (and line) of what is wrong.
 */
export async function desiredState(
  cluster: string,
  node: string,
  doc: Value,
  overlays: Map<string, Overlay>,
  slots: (overlay: string) => Map<string, number>,
): Promise<{ state: NodeState; dir: string }> {
  const views: Array<{ o: Overlay; text: string }> = [];
  for (const [name, o] of [...overlays].sort(([a], [b]) => a.localeCompare(b))) {
    if (!o.members.has(node)) continue;
    views.push({ o, text: memberView(o, node, slots(name)).text });
  }
  const hash = createHash('sha256');
  for (const v of views) hash.update(`${v.o.name}\0${v.text}\0`);
  const base = viewsDir(cluster, node);
  const dir = join(base, hash.digest('hex').slice(0, 16));
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const v of views) writeFileSync(join(dir, `${v.o.name}.yaml`), v.text, { mode: 0o600 });
  const own = await readNode(doc.text, doc.key, dir);
  const parts: NodeState[] = [own];
  for (const { o } of views) {
    const m = o.members.get(node)!;
    // the overlay's route instances, as a node file would give them
    const entry = `{ module: route, name: ${JSON.stringify(o.name)}, priority: ${m.priority ?? 50}, params: { topology: ${JSON.stringify(join(dir, `${o.name}.yaml`))} } }`;
    const text = `devices:\n${m.devices.map((d) => `  ${JSON.stringify(d)}: { modules: [${entry}] }\n`).join('')}`;
    try {
      parts.push(await readNode(text, `${o.file} (${node})`, dir));
    } catch (e) {
      // the line is the generated document's: say what it is instead
      const msg = e instanceof Error ? e.message.replace(/^.*? \(\S+\):\d+: /, '') : String(e);
      throw new ItmError(`${o.file}: ${node}'s overlay instances: ${msg}`);
    }
  }
  return { state: merge(parts, doc.key), dir };
}

/** Removes the views of a node but the one in use (and the one being applied). */
export function pruneViews(cluster: string, node: string, keep: string[]): void {
  const base = viewsDir(cluster, node);
  let names: string[] = [];
  try {
    names = readdirSync(base);
  } catch {
    return;
  }
  for (const n of names) if (!keep.includes(join(base, n))) rmSync(join(base, n), { recursive: true, force: true });
}

/** The node document with the overlays' instances added; an instance both give is refused. */
function merge(parts: NodeState[], docKey: string): NodeState {
  const devices = new Map<string, DeviceState>();
  const seen = new Map<string, Instance>();
  for (const p of parts) {
    for (const d of p.devices) {
      const into = devices.get(d.dev) ?? { dev: d.dev, hooks: [], instances: [], ...(d.at ? { at: d.at } : {}) };
      devices.set(d.dev, into);
      into.hooks = HOOKS.filter((h) => into.hooks.includes(h) || d.hooks.includes(h));
      for (const i of d.instances) {
        const had = seen.get(instanceKey(i));
        if (had)
          throw new ItmError(
            `${had.at ?? docKey}: ${i.name} on ${i.dev} ${i.hook} is also an overlay's (${i.at}): give the module in the node document another name`,
          );
        seen.set(instanceKey(i), i);
        into.instances.push(i);
      }
    }
  }
  return { devices: [...devices.values()] };
}
