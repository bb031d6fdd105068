// The registry: sets devices up and down, loads and unloads modules, and reports what runs where.
// Every operation is transactional (a failure undoes the steps already taken) and every change of
// a chain is one atomic switch for packets in flight (see struct itm_ctl in bpf/include/itm/abi.h).
//
// Its parts, one job each:
//   pins.ts       a hook's pinned dispatcher, and the switch from one chain to the next
//   undo.ts       transactions
//   attach.ts     how a dispatcher is attached (xdp; tc by a tcx link, or cls_bpf), behind one interface
//   devices.ts    the devices: names, link types, the filters on them
//   hooks.ts      up and down: a hook's dispatcher created, adopted, repaired, removed
//   records.ts    what is recorded of a hook's modules, and the questions asked of it
//   objects.ts    a kernel module's object: parameters, shared maps, pins, init
//   chain.ts      load, unload, reorder, parameters set in place, and hook sets
//   instances.ts  a loaded instance's periodic functions, flows and maps
//   views.ts      list and explain
//   cleanup.ts    what is left of devices that are gone, and of modules that went
export { resolveDevice } from './devices.js';
export { up, down, type DownResult, type UpOutcome } from './hooks.js';
export { DEFAULT_PRIORITY } from './records.js';
export { load, unload, unloadSet, unloadInstance, reorder, setParams, type LoadOptions, type LoadResult } from './chain.js';
export { openPeriodic, nodeInstance, flows, type PeriodicInstance } from './instances.js';
export {
  list,
  explain,
  type DeviceView,
  type HookView,
  type ModuleView,
  type UserView,
  type ExplainStep,
  type ExplainView,
} from './views.js';
