/**
 * The logging surface Tidings writes to. It matches pino's method shape (`logger.info(fields, message)`), so a pino
 * logger can be passed as is; `child` is used when present to bind group and event fields.
 */
export interface Logger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
  child?(bindings: Record<string, unknown>): Logger;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

/**
 * A small logger that writes one JSON line per entry to stderr, at `level` and above (default `warn`, or the
 * `TIDINGS_LOG_LEVEL` environment variable). For production, pass pino or any logger of the same shape.
 */
export function createConsoleLogger(
  level: LogLevel = parseLevel(process.env.TIDINGS_LOG_LEVEL) ?? 'warn',
  bindings: Record<string, unknown> = {},
): Logger {
  if (level === 'silent') return silentLogger;
  const threshold = levelRank[level];
  const write =
    (entryLevel: Exclude<LogLevel, 'silent'>) => (fields: Record<string, unknown>, message: string) => {
      if (levelRank[entryLevel] < threshold) return;
      const line = JSON.stringify(
        { level: entryLevel, time: new Date().toISOString(), msg: message, ...bindings, ...fields },
        errorReplacer,
      );
      process.stderr.write(`${line}\n`);
    };
  return {
    debug: write('debug'),
    info: write('info'),
    warn: write('warn'),
    error: write('error'),
    child: (more) => createConsoleLogger(level, { ...bindings, ...more }),
  };
}

const drop = () => undefined;

/** A logger that drops everything (its `child` is itself, so binding fields costs nothing). */
export const silentLogger: Logger = {
  debug: drop,
  info: drop,
  warn: drop,
  error: drop,
  child: () => silentLogger,
};

/**
 * A logger that binds the fields `bindings()` returns to `parent` on its first entry (through `child` when `parent`
 * has one), so code that may log but usually does not (a handler) costs one small object instead of a child logger.
 */
export class LazyChildLogger implements Logger {
  readonly #parent: Logger;
  readonly #bindings: () => Record<string, unknown>;
  #bound: Logger | undefined;

  constructor(parent: Logger, bindings: () => Record<string, unknown>) {
    this.#parent = parent;
    this.#bindings = bindings;
  }

  #logger(): Logger {
    return (this.#bound ??= childLogger(this.#parent, this.#bindings()));
  }

  debug(fields: Record<string, unknown>, message: string): void {
    this.#logger().debug(fields, message);
  }
  info(fields: Record<string, unknown>, message: string): void {
    this.#logger().info(fields, message);
  }
  warn(fields: Record<string, unknown>, message: string): void {
    this.#logger().warn(fields, message);
  }
  error(fields: Record<string, unknown>, message: string): void {
    this.#logger().error(fields, message);
  }
  child(bindings: Record<string, unknown>): Logger {
    return childLogger(this.#logger(), bindings);
  }
}

/** Binds fields to a logger, through its `child` when it has one. */
export function childLogger(logger: Logger, bindings: Record<string, unknown>): Logger {
  if (logger.child) return logger.child(bindings);
  const wrap =
    (method: 'debug' | 'info' | 'warn' | 'error') => (fields: Record<string, unknown>, message: string) =>
      logger[method]({ ...bindings, ...fields }, message);
  return { debug: wrap('debug'), info: wrap('info'), warn: wrap('warn'), error: wrap('error') };
}

function parseLevel(value: string | undefined): LogLevel | undefined {
  return value !== undefined && value in levelRank ? (value as LogLevel) : undefined;
}

function errorReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) {
    const { name, message, stack } = value;
    const cause: unknown = (value as { cause?: unknown }).cause;
    return { name, message, stack, ...(cause === undefined ? {} : { cause }) };
  }
  return value;
}
