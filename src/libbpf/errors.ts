// Error classes for the libbpf binding. Native code never builds messages for JS directly: it
// describes the failure and `errorFromNative` (registered with the addon) picks the class and
// formats the message, so every failure is a BpfError with the same fields.

const ENOTSUPP = 524; // kernel-internal "not implemented", leaks out of bpf()
const EOPNOTSUPP = 95;

export interface BpfErrorOptions {
  errno: number;
  code: string;
  step: string;
  log?: string | undefined;
  cause?: unknown;
}

export class BpfError extends Error {
  /** Positive errno (or libbpf's own 4000+ error numbers). */
  readonly errno: number;
  /** Symbolic errno name, e.g. 'ENOENT'. */
  readonly code: string;
  /** The libbpf function or syscall that failed, e.g. 'bpf_object__load'. */
  readonly step: string;
  /** libbpf's full output (including the verifier log) for object open/load failures. */
  readonly log: string | undefined;

  constructor(message: string, opts: BpfErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.errno = opts.errno;
    this.code = opts.code;
    this.step = opts.step;
    this.log = opts.log;
  }
}

/** The kernel (or the device) cannot do what was asked, as opposed to "it went wrong". */
export class NotSupportedError extends BpfError {}

// On the prototype rather than per instance so `name` stays out of the enumerable fields.
Object.defineProperty(BpfError.prototype, 'name', { value: 'BpfError', writable: true, configurable: true });
Object.defineProperty(NotSupportedError.prototype, 'name', {
  value: 'NotSupportedError',
  writable: true,
  configurable: true,
});

/** What the addon reports about a failure; see native/common.cc. */
export interface NativeErrorInfo {
  errno: number;
  code: string;
  description: string;
  step: string;
  context: string;
  log?: string;
  message?: string;
  notSupported?: boolean;
}

const SUMMARY_LINES = 3;

/**
 * The handful of lines that say why a load failed. The verifier's verdict is the last thing it
 * prints before its statistics; without a verifier log, libbpf's last warnings name the cause.
 */
export function summarizeLog(log: string): string[] {
  const lines = log.split('\n');
  let begin = -1;
  lines.forEach((l, i) => {
    if (l.includes('-- BEGIN PROG LOAD LOG --')) begin = i;
  });
  let body: string[];
  if (begin >= 0) {
    const end = lines.findIndex((l, i) => i > begin && l.includes('-- END PROG LOAD LOG --'));
    body = lines.slice(begin + 1, end < 0 ? undefined : end);
    body = body.filter(
      (l) => l.trim() !== '' && !/^processed \d+ insns/.test(l) && !/^verification time/.test(l) && !/^stack depth/.test(l),
    );
  } else {
    // Generic trailers like "failed to load object" repeat the step, not the reason.
    body = lines.filter((l) => l.trim() !== '' && !/failed to load object/.test(l));
  }
  return body.slice(-SUMMARY_LINES).map((l) => l.replace(/^libbpf: /, '').trimEnd());
}

export function errorFromNative(info: NativeErrorInfo): BpfError {
  let message = info.message ?? `${info.context}: ${info.step}: ${info.description} (${info.code})`;
  if (info.log !== undefined && info.message === undefined) {
    const summary = summarizeLog(info.log);
    if (summary.length > 0) message += `\n    ${summary.join('\n    ')}`;
  }
  const opts: BpfErrorOptions = { errno: info.errno, code: info.code, step: info.step, log: info.log };
  const unsupported = info.notSupported === true || info.errno === ENOTSUPP || info.errno === EOPNOTSUPP;
  return unsupported ? new NotSupportedError(message, opts) : new BpfError(message, opts);
}
