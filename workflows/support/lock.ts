/** The lock of an entity workflow: one handler at a time changes its state. */
import { condition } from '@temporalio/workflow';

/** Whoever holds it sees a settled state until it lets go; the lock is workflow state, so nothing holds it once the workflow moves on. */
export class Lock {
  private held = false;

  /** Whether a handler holds it now. */
  get busy(): boolean {
    return this.held;
  }

  async hold<T>(fn: () => Promise<T> | T): Promise<T> {
    // Taking the lock inside the condition lets exactly one waiter through.
    await condition(() => (this.held ? false : (this.held = true)));
    try {
      return await fn();
    } finally {
      this.held = false;
    }
  }
}
