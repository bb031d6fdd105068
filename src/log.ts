// The control plane's logging, one family: `log`, pino's JSON lines on stderr for debugging, quiet
// unless asked (--verbose or ITM_LOG_LEVEL) so that command output on stdout stays clean for people
// and scripts; and `logLine` / `RateLimitedLog`, the lines for a person that itmd and the module
// hosts write to the agent's log file (their stderr).
//
// pino itself is loaded on the first message at an enabled level, not on import: requiring it costs
// about 11 ms, a fifth of a bare node's start, and most itmctl runs log nothing (warn is the default).
import { createRequire } from 'node:module';
import type { Level, LevelWithSilent, Logger } from 'pino';

const RANK: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
let level: string = process.env.ITM_LOG_LEVEL ?? 'warn';
let real: Logger | undefined;

function pinoLogger(): Logger {
  if (!real) {
    const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino');
    real = pino({ name: 'itm', level }, pino.destination({ fd: 2, sync: true }));
  }
  return real;
}

type LogFn = (objOrMsg: unknown, msg?: string) => void;
const at =
  (l: Level): LogFn =>
  (objOrMsg, msg) => {
    if ((RANK[l] ?? 0) < (RANK[level] ?? RANK.warn!)) return;
    const p = pinoLogger();
    if (msg === undefined) p[l](objOrMsg as object);
    else p[l](objOrMsg as object, msg);
  };

export const log = {
  trace: at('trace'),
  debug: at('debug'),
  info: at('info'),
  warn: at('warn'),
  error: at('error'),
  fatal: at('fatal'),
  get level(): string {
    return level;
  },
  set level(l: LevelWithSilent | string) {
    level = l;
    if (real) real.level = l;
  },
};

export function setVerbose(on: boolean): void {
  if (on) log.level = 'debug';
}

/** A line for a person in the agent's log: when, who says it, what. */
export function logLine(who: string, msg: string): void {
  process.stderr.write(`${new Date().toISOString()} ${who}: ${msg}\n`);
}

/** logLine, at most once a second, saying how many lines it held back since the last. */
export class RateLimitedLog {
  private last = 0;
  private hidden = 0;
  constructor(private readonly who: string) {}
  error(what: string, e: unknown): void {
    const t = Date.now();
    if (t - this.last < 1000) {
      this.hidden++;
      return;
    }
    const more = this.hidden ? ` (and ${this.hidden} more since the last report)` : '';
    logLine(this.who, `${what}: ${e instanceof Error ? e.message : String(e)}${more}`);
    this.last = t;
    this.hidden = 0;
  }
}
