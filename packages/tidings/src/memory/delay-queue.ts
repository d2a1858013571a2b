import type { Clock } from '../core/clock.js';

interface DelayedTask {
  readonly dueAtMs: number;
  /** Insertion order, so tasks due at the same time run first-in first-out. */
  readonly seq: number;
  readonly run: () => void;
  /** Set once the task ran or was cancelled; a done task left in the heap is skipped. */
  done: boolean;
}

/** Cancels a scheduled task if it has not run yet. Idempotent. */
export type CancelDelayed = () => void;

/** `setTimeout` cannot wait longer than this; longer waits are taken in steps. */
const maxSleepMs = 2_147_483_647;

/**
 * Runs callbacks at or after a due time on an injected {@link Clock}, with one clock sleep in flight however many
 * tasks are queued (no per-task timer). Tasks sit in a binary min-heap: `schedule` is O(log n), and each task runs
 * once, in due-time order (ties in scheduling order), on a later macrotask, never synchronously inside `schedule`.
 *
 * A cancelled task stays in the heap until it surfaces and is skipped; once no live task is left the heap is cleared
 * and the sleep stopped, so an idle queue holds no timer (and does not keep the process alive). `close()` drops every
 * queued task and the pending sleep.
 */
export class DelayQueue {
  private readonly clock: Clock;
  private readonly heap: DelayedTask[] = [];
  private seq = 0;
  private live = 0;
  /** The sleep in flight, and the due time it wakes for. */
  private timer: { controller: AbortController; wakeAtMs: number } | undefined;
  private closed = false;

  constructor(clock: Clock) {
    this.clock = clock;
  }

  /**
   * Queues `run` for `dueAtMs` (clock milliseconds) and returns a function that cancels it. Ignored after `close()`.
   */
  schedule(dueAtMs: number, run: () => void): CancelDelayed {
    if (this.closed) return noop;
    const task: DelayedTask = { dueAtMs, seq: this.seq++, run, done: false };
    this.push(task);
    this.live++;
    this.arm();
    return () => {
      if (task.done) return;
      task.done = true;
      this.live--;
      if (this.live === 0) this.clear();
    };
  }

  /** Number of tasks that have neither run nor been cancelled. */
  get size(): number {
    return this.live;
  }

  /** Drops every queued task and stops the pending sleep. Idempotent. */
  close(): void {
    this.closed = true;
    this.clear();
  }

  private clear(): void {
    for (const task of this.heap) task.done = true;
    this.heap.length = 0;
    this.live = 0;
    this.timer?.controller.abort();
    this.timer = undefined;
  }

  /** Makes sure one sleep is in flight that wakes no later than the earliest queued task. */
  private arm(): void {
    const first = this.heap[0];
    if (first === undefined || this.closed) return;
    if (this.timer !== undefined && this.timer.wakeAtMs <= first.dueAtMs) return;
    this.timer?.controller.abort();
    const controller = new AbortController();
    const wakeAtMs = first.dueAtMs;
    this.timer = { controller, wakeAtMs };
    const sleepMs = Math.min(maxSleepMs, Math.max(0, wakeAtMs - this.clock.now()));
    this.clock.sleep(sleepMs, controller.signal).then(
      () => {
        if (this.timer?.controller !== controller) return;
        this.timer = undefined;
        this.runDue();
      },
      () => {
        // Aborted: a sooner task re-armed the queue, or the queue closed. Nothing to do.
      },
    );
  }

  private runDue(): void {
    const now = this.clock.now();
    for (let first = this.heap[0]; first !== undefined && first.dueAtMs <= now; first = this.heap[0]) {
      this.pop();
      if (first.done) continue;
      first.done = true;
      this.live--;
      first.run();
    }
    if (this.live === 0) {
      this.clear();
      return;
    }
    this.arm();
  }

  private push(task: DelayedTask): void {
    const heap = this.heap;
    heap.push(task);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >>> 1;
      if (!before(task, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = task;
  }

  private pop(): void {
    const heap = this.heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && before(heap[right]!, heap[left]!) ? right : left;
      if (!before(heap[child]!, last)) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
  }
}

function noop(): void {}

function before(a: DelayedTask, b: DelayedTask): boolean {
  return a.dueAtMs < b.dueAtMs || (a.dueAtMs === b.dueAtMs && a.seq < b.seq);
}
