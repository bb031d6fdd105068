// Errors a person can act on. An ItmError's message is shown as it is, on one line, after
// "itmctl: "; anything else is a bug or an unexpected system failure.
export class ItmError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ItmError';
  }
}
