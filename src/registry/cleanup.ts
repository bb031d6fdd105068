// Clean-up: what itm kept for devices that are gone, a module's traces in its hook's shared maps,
// and the directories nothing is left in.
import { existsSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import * as abi from '../abi.js';
import { ifIndexToName } from '../libbpf/index.js';
import { removeDeviceDiverts, removeDivert } from '../divert.js';
import { instanceObject, removeInstanceObjects } from './compose.js';
import { copyBtf } from './core-btf.js';
import { instanceDir } from '../instance.js';
import type { Hook } from '../module-def.js';
import { claimNamespace, devicePinDir, ensureBpffs, listDeviceRecords, netnsId, nsPinDir, removeDevice, STATE_DIR } from '../state.js';
import { log } from '../log.js';
import { u32, type HookPins } from './pins.js';

/** The bpffs is there, and this namespace's tree is ours (not a dead namespace's, see claimNamespace). */
export function enterNamespace(create: boolean): void {
  ensureBpffs();
  claimNamespace(create);
  collectGoneDevices();
}

/** The pins and records of devices that no longer exist (deleted, or moved to another namespace):
 * their filters went with them, so nothing of theirs runs. */
function collectGoneDevices(): void {
  const ids = new Set(listDeviceRecords().map((r) => r.ifindex));
  if (existsSync(nsPinDir())) for (const e of readdirSync(nsPinDir())) if (/^\d+$/.test(e)) ids.add(Number(e));
  for (const i of ids) {
    if (ifIndexToName(i) !== undefined) continue;
    log.info(`device ${i} is gone: removing what itm kept for it`);
    rmSync(devicePinDir(i), { recursive: true, force: true });
    removeInstanceObjects(i);
    removeDeviceDiverts(i);
    removeDevice(i);
    tidy(i);
  }
}

/** The device and hook of a hook's pin directory (.../<ifindex>/<hook>). */
function hookOfDir(dir: string): { ifindex: number; hook: Hook } {
  return { ifindex: Number(basename(dirname(dir))), hook: basename(dir) as Hook };
}

/** Removes a module's traces from the hook's shared maps: its slot, its prefixes, and a user
 * module's veth pair. */
export function purgeModule(pins: HookPins, id: number): void {
  pins.maps.itm_uctl.update(u32(id), Buffer.alloc(pins.maps.itm_uctl.valueSize));
  const { ifindex, hook } = hookOfDir(pins.dir);
  removeDivert(ifindex, hook, id);
  for (const which of ['itm_src', 'itm_dst'] as const) {
    for (const k of pins.maps[which].keys()) {
      if (abi.decode<abi.ItmLpmKey>(abi.itm_lpm_key, k).id === id) pins.maps[which].delete(k);
    }
  }
  rmSync(instanceDir(pins.dir, id), { recursive: true, force: true });
  rmSync(instanceObject(ifindex, hook, id), { force: true });
  rmSync(copyBtf(instanceObject(ifindex, hook, id)), { force: true });
}

/** Removes the directories of a device and of the namespace once nothing of itm is left in them
 * (the namespace's marker aside). */
export function tidy(ifindex: number): void {
  try {
    rmdirSync(devicePinDir(ifindex));
  } catch {
    /* gone already, or hooks are set up */
  }
  try {
    if (readdirSync(nsPinDir()).every((e) => e === 'netns')) rmSync(nsPinDir(), { recursive: true, force: true });
  } catch {
    /* no tree */
  }
  try {
    rmdirSync(join(STATE_DIR, netnsId()));
  } catch {
    /* other devices are set up */
  }
}
