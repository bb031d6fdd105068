// How itmctl reaches the agent of its network namespace, starting it when needed.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ItmError } from '../errors.js';
import { AGENT_DIR, agentPaths, request, type Request, type Response } from './protocol.js';

export const ITMD_JS = join(dirname(fileURLToPath(import.meta.url)), 'itmd.js');

function logTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim().split('\n').slice(-3).join('; ');
  } catch {
    return '';
  }
}

/** The agent's answer to `req`; starts the agent first (with `args`) if none runs in this
 * namespace. */
export async function viaAgent(req: Request, args: string[] = []): Promise<Response> {
  const first = await request(req);
  if (first) return first;
  const paths = agentPaths();
  mkdirSync(AGENT_DIR, { recursive: true, mode: 0o700 });
  const out = openSync(paths.log, 'a');
  const child = spawn(process.execPath, [ITMD_JS, ...args], { detached: true, stdio: ['ignore', out, out] });
  closeSync(out);
  let exited: string | undefined;
  child.once('exit', (code, sig) => (exited = sig ? `killed by ${sig}` : `exit ${code}`));
  child.unref();
  for (let i = 0; i < 100; i++) {
    await sleep(100);
    if (existsSync(paths.socket)) {
      const r = await request({ op: 'status' });
      if (r) break;
    }
    if (exited) throw new ItmError(`itmd did not start (${exited}): ${logTail(paths.log)}`, `its log: ${paths.log}`);
  }
  const r = await request(req);
  if (!r) throw new ItmError('itmd did not come up within 10 s', `its log: ${paths.log}`);
  return r;
}

/** Unwraps an answer: an agent's error becomes the command's. */
export function answer(r: Response): Extract<Response, { ok: true }> {
  if (!r.ok) throw new ItmError(r.error, r.hint);
  return r;
}
