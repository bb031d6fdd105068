// itmctl apply, diff and export: a node's whole state in one file. The plan's rules on made-up
// states (no root), then client — itm — server in namespaces: apply, export and apply again
// changing nothing (the same programs), changes made in place or by a reload, a file with an
// error changing nothing, and a load that fails in the middle of an apply undoing all of it; and
// the route overlay of the route tests, each node's part declared in its node file.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ROOT, kernelObjectPath, findModule } from '../src/catalog.js';
import { decode } from '../src/abi.js';
import { ModuleInstance } from '../src/instance.js';
import { BpfMap } from '../src/libbpf/index.js';
import { byPriority, describePlan, planApply, reorders } from '../src/apply/plan.js';
import type { Instance, NodeState } from '../src/apply/state.js';
import type { DeviceView } from '../src/registry/index.js';
import { qos_config, type QosConfig } from '../modules/qos/qos.abi.js';
import { Topology, capture, namespaceSkipReason, udpFlow } from './harness/index.js';
import { cleanItmOnDestroy, clientItmServer, devicePins, itmctl, itmctlJson } from './itm.js';
import { OVERLAY_HOSTS, overlayDecl, overlayFiles, pathsWhen } from './overlay.js';

const EF = 46;

describe('apply: the plan', () => {
  const inst = (name: string, priority = 50, extra: Partial<Instance> = {}): Instance => ({
    dev: 'eth0',
    hook: 'tc-egress',
    name,
    module: 'mark',
    spec: 'mark',
    priority,
    params: { dscp: 46 },
    interest: 'all',
    ...extra,
  });
  const node = (instances: Instance[], hooks: Instance['hook'][] = ['tc-egress']): NodeState => ({
    devices: [{ dev: 'eth0', hooks, instances }],
  });

  test('reorders start where the chains differ, and give each instance after it its priority', () => {
    const p = (name: string, priority = 50) => ({ name, priority });
    assert.deepEqual(reorders([p('a'), p('b'), p('c')], [p('a'), p('b'), p('c')]), []);
    assert.deepEqual(reorders([p('a'), p('b'), p('c')], [p('a'), p('c'), p('b')]), [p('c'), p('b')]);
    assert.deepEqual(reorders([p('a'), p('b')], [p('a'), p('b', 60)]), [p('b', 60)]);
    // equal priorities keep the order given
    assert.deepEqual(
      byPriority([p('x', 60), p('y'), p('z', 10), p('w')]).map((x) => x.name),
      ['z', 'y', 'w', 'x'],
    );
  });

  test('the same state plans nothing; a missing, an extra and a reordered instance plan their steps', () => {
    const cur = node([inst('a', 10), inst('b', 20)]);
    assert.deepEqual(planApply(cur, cur).steps, []);
    const want = node([inst('b', 5), inst('c'), inst('a', 10)]);
    const plan = planApply(want, node([inst('a', 10), inst('b', 20), inst('old')]));
    assert.deepEqual(
      plan.steps.map((s) => s.op),
      ['load', 'unload', 'reorder', 'reorder', 'reorder'],
    );
    assert.deepEqual(describePlan(plan), [
      '+ load c (mark) on eth0 tc-egress, priority 50, interest all, dscp=46',
      '- unload old (mark) on eth0 tc-egress',
      '~ reorder b on eth0 tc-egress: priority 20 → 5',
      '~ reorder a on eth0 tc-egress: priority 10, after its equals',
      '~ reorder c on eth0 tc-egress: priority 50, after its equals',
    ]);
  });

  test('a changed interest or module reloads; a new instance of a name that goes loads after it goes', () => {
    const plan = planApply(
      node([inst('a', 50, { interest: 'proto=udp' }), inst('b', 50, { dev: 'eth0', hook: 'tc-ingress' })], ['tc-ingress', 'tc-egress']),
      node([inst('a'), inst('b')]),
    );
    assert.deepEqual(
      plan.steps.map((s) => `${s.op}${s.op === 'load' && s.reload ? ' (reload)' : ''}`),
      ['unload', 'unload', 'load (reload)', 'load'],
    );
    assert.deepEqual(describePlan(plan), [
      '- unload b (mark) on eth0 tc-egress',
      '~ reload a (mark) on eth0 tc-egress: interest all → proto=udp',
      '+ load b (mark) on eth0 tc-ingress, priority 50, interest all, dscp=46',
    ]);
  });

  test('hooks not asked for go down; a device not in the file goes down whole', () => {
    const cur: NodeState = {
      devices: [
        { dev: 'eth0', hooks: ['tc-ingress', 'tc-egress'], instances: [] },
        { dev: 'eth1', hooks: ['tc-ingress', 'tc-egress'], instances: [inst('m', 50, { dev: 'eth1' })] },
      ],
    };
    const plan = planApply({ devices: [{ dev: 'eth0', hooks: ['tc-egress', 'xdp'], instances: [] }] }, cur);
    assert.deepEqual(describePlan(plan), [
      '- unload m (mark) on eth1 tc-egress',
      '+ up eth0 xdp',
      '- down eth0 tc-ingress',
      '- down eth1 tc-ingress tc-egress',
    ]);
  });
});

const skip = namespaceSkipReason();

describe('itmctl apply, diff and export on a node', { skip }, () => {
  let topo: Topology;
  let out: string; // itm's device towards the server
  let inDev: string; // towards the client
  let srvDev: string;
  before(async () => {
    topo = await Topology.create(clientItmServer());
    cleanItmOnDestroy(topo, 'itm');
    out = topo.dev('itm', 'server');
    inDev = topo.dev('itm', 'client');
    srvDev = topo.dev('server', 'itm');
  });
  after(async () => {
    await topo?.destroy();
  });

  const ctl = (args: string[], opts: { check?: boolean; input?: string } = {}) =>
    opts.input === undefined
      ? itmctl(topo, 'itm', args, opts)
      : topo.exec('itm', [process.execPath, join(ROOT, 'dist', 'src', 'cli', 'itmctl.js'), ...args], opts);
  const list = () => itmctlJson<DeviceView[]>(topo, 'itm', ['list']);
  const file = (name: string, text: string) => {
    const f = join(topo.tmpdir, name);
    writeFileSync(f, text);
    return f;
  };
  /** what a reload would change: each hook's program (relinked at every load and unload) and
   * each module instance's maps (made anew at its load), by where they are */
  async function programs(): Promise<Record<string, number>> {
    const ids: Record<string, number> = {};
    for (const d of await list()) {
      for (const h of d.hooks) {
        ids[`${d.dev} ${h.hook}`] = h.progId!;
        for (const m of h.modules) {
          const dir = join(devicePins(topo, 'itm', d.dev), h.hook, `mod-${m.id}`);
          const maps = readdirSync(dir).sort();
          const map = BpfMap.fromPin(join(dir, maps[0]!));
          ids[`${d.dev} ${h.hook} ${m.name}`] = map.id;
          map.close();
        }
      }
    }
    return ids;
  }
  /** what a person configured: per device and hook, the chain with priorities, interests, parameters */
  async function chains(): Promise<string> {
    return JSON.stringify(
      (await list()).map((d) => [
        d.dev,
        d.hooks.map((h) => [h.hook, h.attached, h.modules.map((m) => [m.name, m.module, m.priority, m.interest, m.params])]),
      ]),
    );
  }
  async function qosThreshold(): Promise<bigint> {
    const h = (await list()).find((d) => d.dev === out)!.hooks.find((x) => x.hook === 'tc-egress')!;
    const m = h.modules.find((x) => x.module === 'qos')!;
    const inst = new ModuleInstance(
      join(devicePins(topo, 'itm', out), 'tc-egress', `mod-${m.id}`),
      kernelObjectPath(await findModule('qos'), 'tc-egress'),
    );
    try {
      return decode<QosConfig>(qos_config, Buffer.from(inst.global('qos_cfg').read())).levels[0]!.threshold;
    } finally {
      inst.close();
    }
  }

  const node = (o: { threshold: number; dscp: string }) => `# a node of the test
devices:
  ${out}:
    hooks: [tc-ingress, tc-egress]
    modules:
      - module: mark
        name: ef
        priority: 10
        interest: proto=udp,dport=5001
        params: { dscp: ${o.dscp} }
      - module: qos
        params:
          threshold: ${o.threshold}
  ${inDev}:
    hooks: [tc-ingress]
    modules:
      - module: mark
        hook: tc-ingress
        interest: [proto=tcp, dport=5002]
        params: { dscp: af41 }
`;

  test('apply makes the node match the file; export reads back as it; applying either again changes nothing', async () => {
    const f = file('node.yaml', node({ threshold: 100, dscp: 'ef' }));
    const diff = (await ctl(['diff', '-f', f])).stdout;
    assert.match(diff, /^\+ load ef \(mark\) on .* tc-egress, priority 10, interest proto=udp,dport=5001, dscp=46$/m);
    assert.deepEqual(await list(), [], 'diff changed nothing');
    await ctl(['apply', '-f', f]);
    const [a, b] = (await list()).sort((x, y) => (x.dev === out ? -1 : y.dev === out ? 1 : 0));
    assert.deepEqual(
      a!.hooks.map((h) => [h.hook, h.modules.map((m) => [m.name, m.priority, m.interest])]),
      [
        ['tc-ingress', []],
        [
          'tc-egress',
          [
            ['ef', 10, 'proto=udp,dport=5001'],
            ['qos', 50, 'all'],
          ],
        ],
      ],
    );
    assert.deepEqual(
      b!.hooks.map((h) => [h.hook, h.modules.map((m) => [m.name, m.interest, m.params])]),
      [['tc-ingress', [['mark', 'proto=tcp,dport=5002', { dscp: 34 }]]]],
    );
    assert.equal(await qosThreshold(), 100n);
    // on the wire: the file's marker marks
    const cap = await capture(topo, 'server', { dev: srvDev, filter: 'udp', direction: 'in' });
    await udpFlow(topo, { from: 'client', to: 'server', family: 4, dport: 5001, count: 20, ratePps: 200 });
    const pkts = await cap.stop(200);
    assert.ok(pkts.length > 0 && pkts.every((p) => p.dscp === EF), 'EF on the wire');

    const ids = await programs();
    const again = await ctl(['apply', '-f', f]);
    assert.match(again.stdout, /^nothing to change/);
    assert.deepEqual(await programs(), ids, 'a second apply reloads nothing');

    const exported = (await ctl(['export'])).stdout;
    const doc = parse(exported) as { devices: Record<string, { hooks: string[]; modules: Array<Record<string, unknown>> }> };
    assert.deepEqual(doc.devices[out]!.modules[1], { module: 'qos', hook: 'tc-egress', params: { threshold: 100 } }, 'defaults left out');
    assert.deepEqual(doc.devices[inDev]!.modules[0]!.params, { dscp: 'af41' }, 'a DSCP by its name');
    assert.match((await ctl(['diff', '-f', '-'], { input: exported })).stdout, /^no changes/);
    assert.match((await ctl(['apply', '-f', '-'], { input: exported })).stdout, /^nothing to change/);
    assert.deepEqual(await programs(), ids, 'export | apply -f - reloads nothing');
    assert.equal((await ctl(['export'])).stdout, exported, 'and exports the same');
    // JSON is YAML: --json writes the same document
    const json = (await ctl(['export', '--json'])).stdout;
    assert.deepEqual(JSON.parse(json), doc);
    assert.match((await ctl(['apply', '-f', '-'], { input: json })).stdout, /^nothing to change/);
  });

  test('a live parameter is set in place; another change reloads that module alone; what is not listed goes', async () => {
    const before = await programs();
    // ef's DSCP and qos's threshold changed, a module more, the client side's device not listed
    const f = file(
      'node2.yaml',
      `devices:
  ${out}:
    hooks: [tc-egress]
    modules:
      - module: mark
        name: ef
        priority: 10
        interest: proto=udp,dport=5001
        params: { dscp: cs1 }
      - module: qos
        params: { threshold: 250 }
      - module: mark
        name: late
        priority: 5
        params: { dscp: cs2 }
`,
    );
    const diff = (await ctl(['diff', '-f', f])).stdout.trim().split('\n');
    assert.deepEqual(
      diff.map((l) => l.replace(new RegExp(`${out}|${inDev}`, 'g'), 'D')),
      [
        '~ set qos on D tc-egress: threshold 100 → 250 (in place)',
        '+ load late (mark) on D tc-egress, priority 5, interest all, dscp=16',
        '- unload mark on D tc-ingress',
        '~ reload ef (mark) on D tc-egress: dscp 46 → 8 (dscp cannot change while it runs)',
        '- down D tc-ingress',
        '- down D tc-ingress',
      ],
    );
    await ctl(['apply', '-f', f]);
    const after = await programs();
    assert.equal(await qosThreshold(), 250n, 'the running qos has the new threshold');
    assert.equal(after[`${out} tc-egress qos`], before[`${out} tc-egress qos`], 'qos was not reloaded');
    assert.notEqual(after[`${out} tc-egress ef`], before[`${out} tc-egress ef`], 'ef was reloaded');
    // (the hook's program is another: every load and unload relinks it)
    const [d] = await list();
    assert.equal((await list()).length, 1, `${inDev} is taken down`);
    assert.deepEqual(
      d!.hooks.map((h) => [h.hook, h.modules.map((m) => `${m.name}:${m.priority}`)]),
      [['tc-egress', ['late:5', 'ef:10', 'qos:50']]],
    );
    assert.match((await ctl(['apply', '-f', f])).stdout, /^nothing to change/);
  });

  test('a file with an error changes nothing and names its line', async () => {
    const was = await chains();
    const ids = await programs();
    const cases: Array<[string, RegExp]> = [
      [
        `devices:\n  ${out}:\n    modules:\n      - module: qos\n        params:\n          treshold: 100\n`,
        /^itmctl: bad\.yaml:6: qos: unknown parameter "treshold" \(its parameters: threshold, /,
      ],
      [
        `devices:\n  ${out}:\n    modules:\n      - module: qos\n        params: { threshold: lots }\n`,
        /^itmctl: bad\.yaml:5: qos: invalid threshold 'lots': not an integer$/,
      ],
      [
        `devices:\n  ${out}:\n    modules:\n      - module: mark\n        hook: tc-sideways\n`,
        /^itmctl: bad\.yaml:5: unknown hook 'tc-sideways'/,
      ],
      [
        `devices:\n  ${out}:\n    modules:\n      - module: mark\n        interest: port=80\n        params: { dscp: ef }\n`,
        /^itmctl: bad\.yaml:5: invalid interest key 'port'/,
      ],
      [`devices:\n  ${out}: {}\n  nosuchdev0: {}\n`, /^itmctl: bad\.yaml:3: cannot manage nosuchdev0: no such device$/],
      [`devices:\n  ${out}:\n    modules: [{ module: nosuchmodule }]\n`, /^itmctl: bad\.yaml:3: unknown module 'nosuchmodule'/],
      ['', /^itmctl: bad\.yaml: the file is empty/],
    ];
    for (const [text, re] of cases) {
      writeFileSync(join(topo.tmpdir, 'bad.yaml'), text);
      const res = await topo.exec(
        'itm',
        [
          'sh',
          '-c',
          `cd ${topo.tmpdir} && exec "$0" "$@"`,
          process.execPath,
          join(ROOT, 'dist', 'src', 'cli', 'itmctl.js'),
          'apply',
          '-f',
          'bad.yaml',
        ],
        {
          check: false,
        },
      );
      assert.equal(res.code, 1, text);
      const lines = res.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `one line: ${res.stderr}`);
      assert.match(lines[0]!, re);
    }
    assert.equal(await chains(), was, 'nothing changed');
    assert.deepEqual(await programs(), ids, 'no program changed');
  });

  test('a load that fails in the middle of an apply undoes the whole apply', async () => {
    const was = await chains();
    const ids = await programs();
    // another tool's XDP program on the client side: itm refuses that hook (and leaves it alone)
    const foreign = join(ROOT, 'bpf', 'build', 'test', 'xdp_foreign.bpf.o');
    await topo.exec('itm', ['ip', 'link', 'set', 'dev', inDev, 'xdp', 'obj', foreign, 'sec', 'xdp']);
    try {
      // a live change, a new module, an unload, and the move of `ef` to the hook that fails
      const f = file(
        'fails.yaml',
        `devices:
  ${out}:
    hooks: [tc-egress]
    modules:
      - module: qos
        params: { threshold: 999 }
      - module: mark
        name: extra
        params: { dscp: cs3 }
  ${inDev}:
    modules:
      - module: mark
        name: ef
        hook: xdp
        params: { dscp: ef }
`,
      );
      const plan = (await ctl(['diff', '-f', f])).stdout.trim().split('\n');
      assert.deepEqual(
        plan.map((l) => l.replace(new RegExp(`${out}|${inDev}`, 'g'), 'D')),
        [
          '~ set qos on D tc-egress: threshold 250 → 999 (in place)',
          '+ load extra (mark) on D tc-egress, priority 50, interest all, dscp=24',
          '- unload late (mark) on D tc-egress',
          '- unload ef (mark) on D tc-egress',
          '+ load ef (mark) on D xdp, priority 50, interest all, dscp=46',
        ],
      );
      const r = await ctl(['apply', '-f', f], { check: false });
      assert.equal(r.code, 1);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.match(
        r.stderr.trim(),
        new RegExp(
          `^itmctl: ${f.replace(/[.]/g, '\\.')}:12: load ef on ${inDev} xdp: cannot set up ${inDev} xdp: another XDP program \\(id \\d+, foreign_xdp\\) is attached to it; nothing was changed \\(the 4 changes before it undone\\)$`,
        ),
      );
      assert.equal(await chains(), was, 'every chain as it was: modules, order, priorities, interests, parameters');
      assert.equal(await qosThreshold(), 250n, "qos's threshold put back in place");
      const now = await programs();
      assert.equal(now[`${out} tc-egress qos`], ids[`${out} tc-egress qos`], 'qos was never reloaded');
      // (the hook's program is another: the rollback's unloads relinked it)
      assert.deepEqual(Object.keys(now).sort(), Object.keys(ids).sort(), 'nothing more, nothing less');
      assert.equal((await list()).length, 1, `nothing left on ${inDev}`);
    } finally {
      await topo.exec('itm', ['ip', 'link', 'set', 'dev', inDev, 'xdp', 'off']);
    }
  });
});

describe('itmctl apply: an overlay (route) declared in each node file', { skip }, () => {
  let topo: Topology;
  before(async () => {
    topo = await Topology.create(overlayDecl());
    cleanItmOnDestroy(topo, ...OVERLAY_HOSTS);
  });
  after(async () => {
    await topo?.destroy();
  });

  test('each node applies its file; the overlay comes up; export reads back as one entry a device; an empty file takes it all down', async () => {
    const tops = overlayFiles();
    for (const host of OVERLAY_HOSTS) {
      writeFileSync(join(topo.tmpdir, `${host}.yaml`), tops[host]);
      // the topology's path is relative to the node file; route goes at both tc hooks of a device
      const devs = topo
        .devs(host)
        .map((d) => `  ${d.dev}:\n    modules:\n      - module: route\n        params: { topology: ${host}.yaml }\n`);
      writeFileSync(join(topo.tmpdir, `${host}-node.yaml`), `devices:\n${devs.join('')}`);
      await itmctl(topo, host, ['apply', '-f', join(topo.tmpdir, `${host}-node.yaml`)]);
    }
    const a = await itmctlJson<DeviceView[]>(topo, 'a', ['list']);
    assert.equal(a.length, topo.devs('a').length);
    for (const d of a) {
      assert.deepEqual(
        d.hooks.map((h) => [h.hook, h.modules.map((m) => m.module)]),
        [
          ['tc-ingress', ['route']],
          ['tc-egress', ['route']],
        ],
      );
    }
    // the overlay works: a's probes find b through a relay
    await pathsWhen(topo, 'a', (v) => ['n1', 'n2'].includes(v.destinations.find((d) => d.node === 'b')?.next_hop ?? ''), 15_000);

    const exported = (await itmctl(topo, 'a', ['export'])).stdout;
    const doc = parse(exported) as { devices: Record<string, { hooks: string[]; modules: unknown[] }> };
    for (const d of topo.devs('a')) {
      assert.deepEqual(doc.devices[d.dev], {
        hooks: ['tc-ingress', 'tc-egress'],
        modules: [{ module: 'route', params: { topology: join(topo.tmpdir, 'a.yaml') } }],
      });
    }
    const ids = async () =>
      JSON.stringify(
        (await itmctlJson<DeviceView[]>(topo, 'a', ['list'])).map((d) => d.hooks.map((h) => [h.progId, h.modules.map((m) => m.id)])),
      );
    const was = await ids();
    const again = await topo.exec('a', [process.execPath, join(ROOT, 'dist', 'src', 'cli', 'itmctl.js'), 'apply', '-f', '-'], {
      input: exported,
    });
    assert.match(again.stdout, /^nothing to change/);
    assert.equal(await ids(), was);

    // nothing listed: route comes off every device (through the agent, which runs its control plane)
    writeFileSync(join(topo.tmpdir, 'empty.yaml'), 'devices: {}\n');
    const gone = (await itmctl(topo, 'a', ['apply', '-f', join(topo.tmpdir, 'empty.yaml')])).stdout;
    assert.match(gone, /^- unload route on /m);
    assert.deepEqual(await itmctlJson<DeviceView[]>(topo, 'a', ['list']), []);
  });
});
