// Ownership of kernel fds by JS handles. Each handle owns exactly one fd; an explicit close()
// releases it at once, and handles dropped without close() have their fd closed after GC.
import { BpfError } from './errors.js';
import { native } from './native.js';

const EBADF = 9;

// The held value is the bare fd number, never the handle (that would keep it alive). The handle
// itself is the unregister token, so close() can cancel the pending cleanup before the number is
// released and possibly reused by an unrelated open().
const orphans = new FinalizationRegistry<number>((fd) => {
  native.closeFd(fd);
});

export abstract class FdHandle {
  #fd: number;

  protected constructor(fd: number) {
    this.#fd = fd;
    orphans.register(this, fd, this);
  }

  /** The owned fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  /** Idempotent. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    orphans.unregister(this);
    native.closeFd(fd);
  }

  protected abstract describe(): string;

  /** The fd for an operation, or a BpfError(EBADF) naming the handle if it was closed. */
  protected liveFd(step: string): number {
    if (this.#fd < 0) {
      throw new BpfError(`${this.describe()}: ${step}: handle is closed (EBADF)`, { errno: EBADF, code: 'EBADF', step });
    }
    return this.#fd;
  }
}

/** Runs `build` with a fresh fd and closes the fd if building the handle fails. */
export function adopt<T>(fd: number, build: (fd: number) => T): T {
  try {
    return build(fd);
  } catch (err) {
    native.closeFd(fd);
    throw err;
  }
}
