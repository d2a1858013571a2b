/**
 * Human output: aligned tables, times, durations, sizes, truncated text, and progress on stderr for anything that
 * runs longer than a second. Machine output (`--json`) does not go through here.
 */

/** Where output goes; `process.stdout` and `process.stderr` fit, and so does a test's buffer. */
export interface Output {
  write(chunk: string): unknown;
  readonly isTTY?: boolean;
}

/** One column of a table: a header, and whether its cells line up on the right (numbers do). */
export interface Column {
  header: string;
  align?: 'left' | 'right';
}

/**
 * Renders rows as a table with a header, columns separated by two spaces, each as wide as its widest cell.
 * Trailing blanks are trimmed. Returns the text with a final newline.
 */
export function table(columns: readonly Column[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = columns.map((column, i) =>
    Math.max(column.header.length, ...rows.map((row) => displayWidth(row[i] ?? ''))),
  );
  const render = (cells: readonly string[]) =>
    columns
      .map((column, i) => {
        const cell = cells[i] ?? '';
        const pad = ' '.repeat(Math.max(0, (widths[i] ?? 0) - displayWidth(cell)));
        return column.align === 'right' ? pad + cell : cell + pad;
      })
      .join('  ')
      .trimEnd();
  return [render(columns.map((c) => c.header)), ...rows.map(render)].join('\n') + '\n';
}

/** Characters as a terminal counts them (code points; wide characters are rare in these tables). */
function displayWidth(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

/** `text` cut to at most `maxChars` code points, with `…` as the last one when it was cut. */
export function truncate(text: string, maxChars: number): string {
  const chars = [...text];
  if (chars.length <= maxChars) return text;
  return chars.slice(0, Math.max(0, maxChars - 1)).join('') + '…';
}

/** An instant as ISO 8601 in UTC with milliseconds, e.g. `2025-05-01T12:00:00.123Z`. */
export function formatTime(ms: number): string {
  return Number.isFinite(ms) ? new Date(ms).toISOString() : '-';
}

/** How long ago `ms` was, relative to `nowMs`, in the largest sensible unit: `3s ago`, `5m ago`, `2d ago`. */
export function formatAge(ms: number, nowMs: number): string {
  const elapsed = Math.max(0, nowMs - ms);
  if (elapsed < 1_000) return 'just now';
  return `${formatDuration(elapsed)} ago`;
}

const durationUnits: ReadonlyArray<[string, number]> = [
  ['d', 86_400_000],
  ['h', 3_600_000],
  ['m', 60_000],
  ['s', 1_000],
];

/** A duration in its largest whole unit (`7d`, `36h`, `90s`, `250ms`); the exact value when not whole. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of durationUnits) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  for (const [unit, size] of durationUnits) {
    if (ms >= size) return `${Math.floor(ms / size)}${unit}`;
  }
  return `${ms}ms`;
}

const byteUnits: ReadonlyArray<[string, number]> = [
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
  ['KiB', 1024],
];

/** A size in bytes in binary units: `64 MiB`, `1.5 KiB`, `512 B`. */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of byteUnits) {
    if (bytes >= size) return `${Number((bytes / size).toFixed(1))} ${unit}`;
  }
  return `${bytes} B`;
}

/** A count with thousands separators: `1,234,567`. */
export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

/** `1 event`, `3 events`. */
export function plural(n: number, noun: string, nouns = `${noun}s`): string {
  return `${formatCount(n)} ${n === 1 ? noun : nouns}`;
}

/** Reports the progress of a long operation. */
export interface Progress {
  /** Sets what is done so far (and of how much, if known); shown once the operation has run for a second. */
  update(done: number, total?: number): void;
  /** Clears the progress line, if one was shown. Idempotent. */
  stop(): void;
}

export interface ProgressOptions {
  /** What is being done, e.g. `publishing` or `scanning orders`. */
  label: string;
  /** The unit counted, e.g. `events`; without one, only the elapsed time is shown (for waits). */
  unit?: string;
  /** Nothing is shown before this. Default 1,000 ms. */
  delayMs?: number;
  /** The line is redrawn at most this often. Default 200 ms. */
  intervalMs?: number;
}

/**
 * Progress on stderr for operations that run longer than a second, when stderr is a terminal: one line redrawn in
 * place and cleared at the end, so that what stays on the screen (an error, say) is not mixed with it. Nothing for
 * quick operations, and nothing when stderr is a pipe or a file: scripts get results, not progress.
 */
export function createProgress(stderr: Output, options: ProgressOptions): Progress {
  const startedAt = Date.now();
  const delayMs = options.delayMs ?? 1_000;
  if (stderr.isTTY !== true) return { update: () => undefined, stop: () => undefined };
  const intervalMs = options.intervalMs ?? 200;
  let lastShownAt = 0;
  let shown = false;
  let done = 0;
  let total: number | undefined;
  let stopped = false;
  const render = () => {
    const seconds = Math.floor((Date.now() - startedAt) / 1_000);
    if (options.unit === undefined) return `${options.label} (${seconds}s)`;
    const of = total === undefined ? '' : ` of ${formatCount(total)}`;
    return `${options.label}: ${formatCount(done)}${of} ${options.unit} (${seconds}s)`;
  };
  const show = (force: boolean) => {
    const now = Date.now();
    if (stopped || now - startedAt < delayMs || (!force && now - lastShownAt < intervalMs)) return;
    lastShownAt = now;
    shown = true;
    stderr.write(`\r\x1b[2K${render()}`);
  };
  // A timer, so that progress shows while a single long step (one big read or write) is still running.
  const timer = setInterval(() => show(false), Math.min(intervalMs, 250));
  timer.unref();
  return {
    update(doneNow, totalNow) {
      done = doneNow;
      total = totalNow;
      show(false);
    },
    stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      if (shown) stderr.write('\r\x1b[2K');
    },
  };
}
