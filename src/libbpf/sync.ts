import { BPF_MAP_TYPE } from './constants.js';
import { BpfMap } from './map.js';

let pair: { outer: BpfMap; inner: BpfMap } | undefined;

/**
 * Returns once every BPF program run that was under way when it was called has finished. Updating
 * a map-in-map makes the kernel wait for an RCU grace period before the syscall returns, and every
 * non-sleepable program (tc, XDP, and all their tail calls) runs inside one RCU read-side section.
 * Use it after switching what programs read, before reusing what they read before.
 */
export function waitForRunningPrograms(): void {
  if (!pair) {
    const inner = BpfMap.create({ type: BPF_MAP_TYPE.ARRAY, name: 'sync_inner', keySize: 4, valueSize: 4, maxEntries: 1 });
    const outer = BpfMap.create({
      type: BPF_MAP_TYPE.ARRAY_OF_MAPS,
      name: 'sync_outer',
      keySize: 4,
      valueSize: 4,
      maxEntries: 1,
      innerMap: inner,
    });
    pair = { outer, inner };
  }
  const v = Buffer.alloc(4);
  v.writeUInt32LE(pair.inner.fd);
  pair.outer.update(Buffer.alloc(4), v);
}
