// A module's own itmctl commands: a folder under ITM_MODULE_PATH with a cli.js beside its
// module.js adds its command to itmctl; one whose cli.js does not load stops nothing but its own
// command, which says why on one line. Nothing here needs a device or a namespace.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../src/catalog.js';
import { ITMCTL } from './itm.js';

describe('a module contributes its own itmctl commands', () => {
  let dir: string;
  const run = (...args: string[]) => {
    const r = spawnSync(process.execPath, [ITMCTL, ...args], {
      encoding: 'utf8',
      env: { ...process.env, ITM_MODULE_PATH: dir, COLUMNS: '200' },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const oneLine = (r: { stderr: string }, re: RegExp) => {
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line, got:\n${r.stderr}`);
    assert.match(lines[0]!, /^itmctl: /);
    assert.match(lines[0]!, re);
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'itm-module-cli-'));
    const module = (name: string, cli: string) => {
      mkdirSync(join(dir, name));
      writeFileSync(
        join(dir, name, 'module.js'),
        `export default ${JSON.stringify({
          name,
          description: `${name}, a test module`,
          hooks: ['tc-egress'],
          kernel: { object: join(ROOT, 'bpf', 'build', 'modules', 'mark.bpf.o') },
          params: {},
        })};\n`,
      );
      writeFileSync(join(dir, name, 'cli.js'), cli);
    };
    module(
      'greet',
      `export default {
  command: 'greet <who>',
  describe: 'greets someone (a test module command)',
  builder: (y) => y.positional('who', { type: 'string' }).option('twice', { type: 'boolean', describe: 'greet again' }),
  handler: (a) => { console.log(a.json ? JSON.stringify({ hello: a.who }) : 'hello ' + a.who + (a.twice ? ', hello again' : '')); },
};\n`,
    );
    module('broken', `throw new Error('broken on purpose');\n`);
    module('misnamed', `export default [{ command: 'other', describe: 'not named after its module', handler: () => {} }];\n`);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('its command is in the help and runs, with its own options and the global ones', () => {
    const help = run('--help');
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /itmctl greet <who>\s+greets someone/);
    assert.match(help.stdout, /itmctl route <action>/, "the shipped modules' commands too");
    assert.doesNotMatch(help.stdout, /itmctl (broken|other)\b/, 'those that do not load are left out');
    const own = run('greet', '--help');
    assert.equal(own.code, 0);
    assert.match(own.stdout, /--twice\s+greet again/);
    assert.deepEqual(run('greet', 'world', '--twice'), { code: 0, stdout: 'hello world, hello again\n', stderr: '' });
    assert.equal(run('--json', 'greet', 'world').stdout, '{"hello":"world"}\n');
    const bad = run('greet', 'world', '--colour', 'red');
    assert.equal(bad.code, 2);
    oneLine(bad, /Unknown argument: colour/);
  });

  test('one whose cli.js does not load stops only its own command, with one line', () => {
    assert.equal(run('--version').code, 0);
    assert.equal(run('greet', 'you').stdout, 'hello you\n');
    const r = run('broken', 'x');
    assert.equal(r.code, 1);
    oneLine(r, /cannot load the commands of module broken \(.*cli\.js\): broken on purpose$/);
    const m = run('misnamed');
    assert.equal(m.code, 1);
    oneLine(m, /command 'other' must be named after the module \('misnamed <action>'\)/);
  });
});
