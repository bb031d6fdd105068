// A tcx user that is not itm, for the tests: run in a namespace (`node tcx-tool.js ...`), it
// attaches a test program by a tcx link it pins, detaches one, or prints a hook's programs.
//   attach DEV ingress|egress first|last OBJECT PROGRAM DIR   pins DIR/link and the object's maps under DIR
//   detach PIN                                                detaches the pinned link (the pin stays, defunct)
//   query DEV                                                 {"ingress":[{progId,linkId,name}],"egress":[...]}
import { join } from 'node:path';
import { BpfLink, BpfObject, BpfProgram, ifNameToIndex, tcx, type TcxDirection } from '../src/libbpf/index.js';

const [cmd, ...a] = process.argv.slice(2);
if (cmd === 'attach') {
  const [dev, dir, where, objPath, prog, pins] = a as [string, TcxDirection, 'first' | 'last', string, string, string];
  const obj = BpfObject.open(objPath);
  obj.load();
  for (const m of obj.mapNames().filter((n) => !n.includes('.'))) obj.map(m).pin(join(pins, m));
  const link = tcx.attach(ifNameToIndex(dev), dir, obj.program(prog), { where });
  link.pin(join(pins, 'link'));
  process.stdout.write(`${JSON.stringify({ linkId: link.id })}\n`);
  link.close();
  obj.close();
} else if (cmd === 'detach') {
  const link = BpfLink.fromPin(a[0]!);
  link.detach();
  link.close();
} else if (cmd === 'query') {
  const ifindex = ifNameToIndex(a[0]!);
  const name = (id: number) => {
    const p = BpfProgram.fromId(id);
    const n = p.name;
    p.close();
    return n;
  };
  const q = (d: TcxDirection) => tcx.query(ifindex, d).entries.map((e) => ({ ...e, name: name(e.progId) }));
  process.stdout.write(`${JSON.stringify({ ingress: q('ingress'), egress: q('egress') })}\n`);
} else {
  process.stderr.write(`tcx-tool: unknown command ${cmd}\n`);
  process.exit(2);
}
