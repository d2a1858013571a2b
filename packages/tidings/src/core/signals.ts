/** Anything with a graceful `close()`: a bus, a consumer, a transport. */
export interface Closable {
  close(): Promise<void>;
}

export interface CloseOnSignalsOptions {
  /** Default `['SIGINT', 'SIGTERM']`. */
  signals?: readonly NodeJS.Signals[];
  /** Called after everything closed (or failed to), e.g. to log. */
  onClosed?: (error: unknown) => void;
}

/**
 * Closes `targets` gracefully, in order, on the first SIGINT or SIGTERM, then sets `process.exitCode` (0, or 1 if a
 * close failed) so the process can end on its own. A second signal while closing exits at once with code 130.
 * Returns a function that removes the listeners.
 */
export function closeOnSignals(
  targets: Closable | readonly Closable[],
  options: CloseOnSignalsOptions = {},
): () => void {
  const list = Array.isArray(targets) ? (targets as readonly Closable[]) : [targets as Closable];
  const signals = options.signals ?? ['SIGINT', 'SIGTERM'];
  let closing = false;
  const onSignal = () => {
    if (closing) {
      process.exit(130);
    }
    closing = true;
    void (async () => {
      let failure: unknown;
      for (const target of list) {
        try {
          await target.close();
        } catch (error) {
          failure ??= error;
        }
      }
      process.exitCode = failure === undefined ? 0 : 1;
      options.onClosed?.(failure);
      remove();
    })();
  };
  const remove = () => {
    for (const signal of signals) process.off(signal, onSignal);
  };
  for (const signal of signals) process.on(signal, onSignal);
  return remove;
}
