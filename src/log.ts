// One logger for the control plane: pino, JSON lines on stderr. Quiet unless asked (--verbose or
// ITM_LOG_LEVEL), so that command output on stdout stays clean for people and scripts.
import { pino } from 'pino';

export const log = pino(
  { name: 'itm', level: process.env.ITM_LOG_LEVEL ?? 'warn' },
  pino.destination({ fd: 2, sync: true }),
);

export function setVerbose(on: boolean): void {
  if (on) log.level = 'debug';
}
