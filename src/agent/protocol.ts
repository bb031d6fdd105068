// itmd's control socket: where it is, and the requests itmctl sends. One JSON object a line each
// way; one request per connection.
import { connect } from 'node:net';
import { join } from 'node:path';
import { ItmError } from '../errors.js';
import type { LoadOptions, LoadResult } from '../registry/index.js';
import { netnsId, RUN_DIR } from '../state.js';
import type { Hook } from '../module-def.js';
import type { FleetStatus } from '../fleet/follower.js';

export const AGENT_DIR = join(RUN_DIR, 'agent');

/** One agent per network namespace; its files are named by the namespace (as the pins are), and
 * are root's only (mode 0600 socket in a 0700 directory). */
export function agentPaths(ns = netnsId()): { socket: string; pid: string; log: string } {
  return { socket: join(AGENT_DIR, `${ns}.sock`), pid: join(AGENT_DIR, `${ns}.pid`), log: join(AGENT_DIR, `${ns}.log`) };
}

export interface HostedView {
  name: string;
  dev: string;
  hook: Hook;
  module: string;
  /** running, starting, restarting (after a crash), stopped */
  state: string;
  pid?: number;
  restarts: number;
  lastExit?: string;
}
export interface PeriodicView {
  name: string;
  dev: string;
  hook: Hook;
  module: string;
  intervalMs: number;
  runs: number;
  last?: { classes?: Record<string, number | string>; changed?: string; error?: string };
}
export interface AgentStatus {
  pid: number;
  netns: string;
  startedAt: string;
  metrics?: string;
  hosts: HostedView[];
  periodic: PeriodicView[];
  /** itmd --etcd: how it follows the cluster */
  fleet?: FleetStatus;
}

/** what an unload took off: the hook, and the other hooks when one load had put the module at
 * several (hookSet) */
export interface UnloadResult {
  hook: Hook;
  id: number;
  others?: Array<{ hook: Hook; id: number }>;
}

export type Request =
  | { op: 'status' }
  | { op: 'load'; opts: LoadOptions }
  | { op: 'unload'; name: string; dev: string; hook?: Hook }
  | { op: 'metrics' }
  | { op: 'shutdown' };

export type Response =
  | { ok: true; status?: AgentStatus; load?: LoadResult; unload?: UnloadResult; metrics?: string }
  | { ok: false; error: string; hint?: string };

/** Sends one request; undefined when no agent listens. An agent that takes the request and goes
 * without answering is an error: what it did is not known, and sending it again could do it twice. */
export function request(req: Request, timeoutMs = 30_000, ns = netnsId()): Promise<Response | undefined> {
  return new Promise((resolve, reject) => {
    const s = connect(agentPaths(ns).socket);
    let buf = '';
    let answered = false;
    let sent = false;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new ItmError(`itmd did not answer within ${timeoutMs / 1000} s`, `see its log, ${agentPaths(ns).log}`));
    }, timeoutMs);
    s.on('connect', () => {
      sent = true;
      s.write(`${JSON.stringify(req)}\n`);
    });
    s.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      answered = true;
      clearTimeout(timer);
      s.end();
      try {
        resolve(JSON.parse(buf.slice(0, nl)) as Response);
      } catch {
        reject(new ItmError('itmd sent an answer that is not JSON'));
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!answered && (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')) resolve(undefined);
      else reject(new ItmError(`cannot talk to itmd: ${e.message}`));
    });
    s.on('close', () => {
      clearTimeout(timer);
      if (answered) return;
      if (!sent) resolve(undefined);
      else
        reject(
          new ItmError(
            `itmd went away while handling '${req.op}', without an answer`,
            `itmctl list shows what was done; see its log, ${agentPaths(ns).log}`,
          ),
        );
    });
  });
}
