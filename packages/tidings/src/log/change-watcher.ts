/**
 * Notices commits by other connections to the log database (other processes, other transports) without a daemon:
 * `fs.watch` on the WAL file (inotify, kqueue, ...) wakes the transport when any process writes to it, and a poll
 * of SQLite's `PRAGMA data_version` (done by the caller's `check`) tells whether another connection committed.
 *
 * A watcher can fail silently (network file systems, some container mounts), so it is trusted only once it has
 * shown an event, and distrusted again when a commit of this transport is not followed by an event within a second.
 * While it is not trusted, `check` runs every `pollIntervalMs`; while it is, only every second, as a safety net.
 */
import * as fs from 'node:fs';

/** The safety-net poll while the watcher is trusted. */
const trustedPollIntervalMs = 1000;
/** A commit of ours not followed by a watcher event within this long makes the watcher untrusted. */
const eventExpectedWithinMs = 1000;
/**
 * An event can arrive before SQLite has published the commit in its WAL index (the frames are written first), so an
 * event whose check finds nothing new is checked once more after this long.
 */
const recheckDelayMs = 2;

export interface ChangeWatcherOptions {
  /** The file to watch: the database's `-wal` file. */
  file: string;
  /** The poll period while no watcher is trusted. */
  pollIntervalMs: number;
  /** Looks for changes by other connections; returns true if it found one. */
  check: () => boolean;
}

export class ChangeWatcher {
  private readonly options: ChangeWatcherOptions;
  private watcher: fs.FSWatcher | undefined;
  private trusted = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private pollIntervalMs = 0;
  private checkQueued = false;
  private recheckTimer: NodeJS.Timeout | undefined;
  /** `performance.now()` by which a watcher event is due after one of our commits. */
  private eventDueBy: number | undefined;
  private running = false;

  constructor(options: ChangeWatcherOptions) {
    this.options = options;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    try {
      this.watcher = fs.watch(this.options.file, { persistent: false }, () => this.onEvent());
      this.watcher.on('error', () => this.dropWatcher());
    } catch {
      this.watcher = undefined; // No watcher on this file system: polling alone.
    }
    this.armPoll();
  }

  stop(): void {
    this.running = false;
    this.dropWatcher();
    clearInterval(this.pollTimer);
    clearTimeout(this.recheckTimer);
    this.pollTimer = undefined;
    this.recheckTimer = undefined;
  }

  /** This transport committed: a trusted watcher must report it soon. */
  ownCommit(): void {
    if (this.watcher !== undefined && this.trusted && this.eventDueBy === undefined) {
      this.eventDueBy = performance.now() + eventExpectedWithinMs;
    }
  }

  private onEvent(): void {
    if (!this.running) return;
    this.eventDueBy = undefined;
    if (!this.trusted) {
      this.trusted = true;
      this.armPoll();
    }
    if (this.checkQueued) return;
    this.checkQueued = true;
    setImmediate(() => {
      this.checkQueued = false;
      if (!this.running || this.options.check() || this.recheckTimer !== undefined) return;
      this.recheckTimer = setTimeout(() => {
        this.recheckTimer = undefined;
        if (this.running) this.options.check();
      }, recheckDelayMs);
      this.recheckTimer.unref();
    });
  }

  private onPoll(): void {
    if (this.eventDueBy !== undefined && performance.now() > this.eventDueBy) {
      this.eventDueBy = undefined;
      this.trusted = false;
      this.armPoll();
    }
    this.options.check();
  }

  private armPoll(): void {
    if (!this.running) return;
    const intervalMs = this.trusted
      ? Math.max(this.options.pollIntervalMs, trustedPollIntervalMs)
      : this.options.pollIntervalMs;
    if (this.pollTimer !== undefined && this.pollIntervalMs === intervalMs) return;
    clearInterval(this.pollTimer);
    this.pollIntervalMs = intervalMs;
    this.pollTimer = setInterval(() => this.onPoll(), intervalMs);
    this.pollTimer.unref();
  }

  private dropWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.trusted = false;
    this.eventDueBy = undefined;
    this.armPoll();
  }
}
