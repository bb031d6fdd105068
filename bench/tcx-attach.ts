// Puts one program of an object on a device's tcx hook, by a link pinned at `pin`, for the
// benchmarks' floors (an empty program, the hand-written qos) on the attachment itm uses.
// Run inside the device's namespace; removing the pin detaches the program.
//   node dist/bench/tcx-attach.js <object> <program> <device> <ingress|egress> <pin>
import { BpfObject, ifNameToIndex, tcx } from '../src/libbpf/index.js';

const [path, name, dev, direction, pin] = process.argv.slice(2);
if (!path || !name || !dev || (direction !== 'ingress' && direction !== 'egress') || !pin) {
  process.stderr.write('usage: tcx-attach <object> <program> <device> <ingress|egress> <pin>\n');
  process.exit(2);
}
const obj = BpfObject.open(path);
try {
  obj.load();
  const prog = obj.program(name);
  const link = tcx.attach(ifNameToIndex(dev), direction, prog, { where: 'first' });
  link.pin(pin);
  link.close();
  prog.close();
} finally {
  obj.close();
}
