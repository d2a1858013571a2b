/**
 * The durable stores the embedded log keeps in its database, beside the records: parked keys, the idempotency inbox
 * and operator requests. Reads answer synchronously from the database; writes go through the transport's write
 * queue (group commit, fsync'd with `durability: 'fsync'`) and resolve once committed, so a read after an awaited
 * write sees it, in this process and in every other process on the data directory.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../core/clock.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { InboxStore } from '../core/inbox.js';
import type { ParkedEvent, ParkedKey, ParkedKeyRef, ParkingStore } from '../core/parking.js';
import type {
  OperatorRequest,
  OperatorRequestOutcome,
  OperatorRequestStore,
  TransportStores,
} from '../core/transport.js';
import type { Database } from './db.js';
import { checkInteger, describeValue, invalid } from './validation.js';

/** The most events one parked key holds; appending more fails with a retryable `CONFLICT`, as in memory. */
export const maxParkedEventsPerKey = 10_000;
/** How long the inbox remembers an event id (7 days). */
export const inboxTtlMs = 7 * 24 * 60 * 60 * 1000;
/** The most event ids the inbox keeps per group; the oldest beyond it are forgotten by the retention pass. */
export const inboxMaxEntriesPerGroup = 100_000;
/** Completed operator requests are deleted this long after completion (30 days). */
export const completedRequestRetentionMs = 30 * 24 * 60 * 60 * 1000;
/** Rows one prune statement deletes at most, to keep retention transactions short. */
const pruneChunk = 10_000;

export interface LogStoresDeps {
  db: Database;
  clock: Clock;
  /** Runs `run` in a queued write transaction; resolves with its result once committed. */
  write: <T>(run: () => T, options: { durable: boolean; savepoint: boolean }) => Promise<T>;
  /** Throws `CLOSED` once the transport is closed. */
  checkOpen: (what: string) => void;
}

export interface LogStoresInternal {
  readonly stores: Required<TransportStores>;
  /** Inside a write transaction: forgets expired inbox ids and old completed requests. */
  prune(now: number): void;
}

interface ParkedKeyRow {
  group_name: string;
  topic: string;
  key: string;
  error: string;
  attempts: number;
}

interface ParkedEventRow {
  partition: number;
  offset: number;
  headers: string;
  value: Buffer;
  timestamp: number;
  parked_at: number;
}

interface RequestRow {
  id: string;
  group_name: string;
  topic: string;
  key: string;
  kind: string;
  dead_letter_id: string | null;
  requested_at: number;
  outcome_ok: number | null;
  outcome_message: string | null;
}

/**
 * Creates the durable stores over the log database.
 *
 * - Parking: at most {@link maxParkedEventsPerKey} events per key; parked keys live until shifted empty.
 * - Inbox: an id is remembered for {@link inboxTtlMs} (7 days) and among the newest {@link inboxMaxEntriesPerGroup}
 *   (100,000) ids of its group; both limits are applied by the transport's retention pass (every
 *   `retentionIntervalMs`), and `has` ignores ids older than the TTL at once.
 * - Operator requests: kept until completed, and for 30 days after.
 */
export function createLogStores(deps: LogStoresDeps): LogStoresInternal {
  const { db, clock, write, checkOpen } = deps;
  const stmt = {
    isParked: db.prepare<[string, string, string], number>(
      'SELECT 1 FROM parked_keys WHERE group_name = ? AND topic = ? AND key = ?',
    ),
    parkedKey: db.prepare<[string, string, string], ParkedKeyRow>(
      'SELECT group_name, topic, key, error, attempts FROM parked_keys WHERE group_name = ? AND topic = ? AND key = ?',
    ),
    parkedKeys: db.prepare<[], ParkedKeyRow>(
      'SELECT group_name, topic, key, error, attempts FROM parked_keys ORDER BY parked_at, seq',
    ),
    parkedKeysOfGroup: db.prepare<[string], ParkedKeyRow>(
      'SELECT group_name, topic, key, error, attempts FROM parked_keys WHERE group_name = ? ORDER BY parked_at, seq',
    ),
    parkedEvents: db.prepare<[string, string, string], ParkedEventRow>(
      'SELECT partition, offset, headers, value, timestamp, parked_at FROM parked_events ' +
        'WHERE group_name = ? AND topic = ? AND key = ? ORDER BY seq',
    ),
    parkedCounters: db.prepare<[string, string, string], { event_count: number; next_event_seq: number }>(
      'SELECT event_count, next_event_seq FROM parked_keys WHERE group_name = ? AND topic = ? AND key = ?',
    ),
    setParkedCounters: db.prepare(
      'UPDATE parked_keys SET event_count = ?, next_event_seq = ? WHERE group_name = ? AND topic = ? AND key = ?',
    ),
    firstParkedEventSeq: db
      .prepare<[string, string, string], number | null>(
        'SELECT MIN(seq) FROM parked_events WHERE group_name = ? AND topic = ? AND key = ?',
      )
      .pluck(),
    nextParkedKeySeq: db.prepare<[], number>('SELECT COALESCE(MAX(seq), 0) + 1 FROM parked_keys').pluck(),
    insertParkedKey: db.prepare(
      'INSERT INTO parked_keys (group_name, topic, key, error, attempts, parked_at, seq, event_count, next_event_seq) ' +
        'VALUES (?, ?, ?, ?, ?, ?, ?, 0, 1)',
    ),
    updateParkedKey: db.prepare(
      'UPDATE parked_keys SET error = ?, attempts = ? WHERE group_name = ? AND topic = ? AND key = ?',
    ),
    deleteParkedKey: db.prepare('DELETE FROM parked_keys WHERE group_name = ? AND topic = ? AND key = ?'),
    insertParkedEvent: db.prepare(
      'INSERT INTO parked_events (group_name, topic, key, seq, partition, offset, headers, value, timestamp, ' +
        'parked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    ),
    deleteParkedEvent: db.prepare(
      'DELETE FROM parked_events WHERE group_name = ? AND topic = ? AND key = ? AND seq = ?',
    ),
    inboxAddedAt: db
      .prepare<[string, string], number>('SELECT added_at FROM inbox WHERE group_name = ? AND event_id = ?')
      .pluck(),
    inboxAdd: db.prepare(
      'INSERT INTO inbox (group_name, event_id, added_at) VALUES (?, ?, ?) ON CONFLICT (group_name, event_id) DO NOTHING',
    ),
    inboxExpire: db.prepare(
      'DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox WHERE added_at < ? ORDER BY added_at LIMIT ?)',
    ),
    inboxGroups: db.prepare<[], string>('SELECT DISTINCT group_name FROM inbox').pluck(),
    inboxCutoff: db
      .prepare<[string, number], number>(
        'SELECT seq FROM inbox WHERE group_name = ? ORDER BY seq DESC LIMIT 1 OFFSET ?',
      )
      .pluck(),
    inboxTrim: db.prepare(
      'DELETE FROM inbox WHERE seq IN (SELECT seq FROM inbox WHERE group_name = ? AND seq <= ? ORDER BY seq LIMIT ?)',
    ),
    addRequest: db.prepare(
      'INSERT INTO operator_requests (id, group_name, topic, key, kind, dead_letter_id, requested_at) ' +
        'VALUES (?, ?, ?, ?, ?, ?, ?)',
    ),
    pendingRequests: db.prepare<[string, number], RequestRow>(
      'SELECT id, group_name, topic, key, kind, dead_letter_id, requested_at, outcome_ok, outcome_message ' +
        'FROM operator_requests WHERE group_name = ? AND completed_at IS NULL ORDER BY seq LIMIT ?',
    ),
    request: db.prepare<[string], RequestRow>(
      'SELECT id, group_name, topic, key, kind, dead_letter_id, requested_at, outcome_ok, outcome_message ' +
        'FROM operator_requests WHERE id = ?',
    ),
    completeRequest: db.prepare(
      'UPDATE operator_requests SET outcome_ok = ?, outcome_message = ?, completed_at = ? ' +
        'WHERE id = ? AND completed_at IS NULL',
    ),
    pruneRequests: db.prepare(
      'DELETE FROM operator_requests WHERE seq IN (SELECT seq FROM operator_requests ' +
        'WHERE completed_at IS NOT NULL AND completed_at < ? LIMIT ?)',
    ),
  };

  const readEvents = (ref: ParkedKeyRef): ParkedEvent[] =>
    stmt.parkedEvents.all(ref.group, ref.topic, ref.key).map((row) => ({
      partition: row.partition,
      offset: row.offset,
      headers: Object.freeze(JSON.parse(row.headers) as Record<string, string>),
      value: new Uint8Array(row.value),
      timestamp: row.timestamp,
      parkedAt: row.parked_at,
    }));
  const toParkedKey = (row: ParkedKeyRow): ParkedKey => {
    const ref = { group: row.group_name, topic: row.topic, key: row.key };
    return { ...ref, error: row.error, attempts: row.attempts, events: readEvents(ref) };
  };

  const parking: ParkingStore = {
    isParked: (ref) => {
      checkOpen('read parked keys');
      checkRef(ref);
      return stmt.isParked.get(ref.group, ref.topic, ref.key) !== undefined;
    },
    append: (ref, event, failure) => {
      checkOpen('park an event');
      checkRef(ref);
      const headers = JSON.stringify(event.headers);
      const value = Buffer.from(event.value); // copied now: the caller may reuse its buffer
      const { partition, offset, timestamp, parkedAt } = event;
      return write(
        () => {
          let counters = stmt.parkedCounters.get(ref.group, ref.topic, ref.key);
          if ((counters?.event_count ?? 0) >= maxParkedEventsPerKey) {
            throw new TidingsError(
              ErrorCode.CONFLICT,
              `parked key "${ref.key}" of group "${ref.group}" on topic "${ref.topic}" already holds ` +
                `${maxParkedEventsPerKey} events; retry or skip it (bus.parked.retry / skip) before more can queue ` +
                `behind it`,
              { group: ref.group, topic: ref.topic, retryable: true },
            );
          }
          if (counters === undefined) {
            stmt.insertParkedKey.run(
              ref.group,
              ref.topic,
              ref.key,
              '',
              0,
              clock.now(),
              stmt.nextParkedKeySeq.get()!,
            );
            counters = { event_count: 0, next_event_seq: 1 };
          }
          const seq = counters.next_event_seq;
          stmt.insertParkedEvent.run(
            ref.group,
            ref.topic,
            ref.key,
            seq,
            partition,
            offset,
            headers,
            value,
            timestamp,
            parkedAt,
          );
          stmt.setParkedCounters.run(counters.event_count + 1, seq + 1, ref.group, ref.topic, ref.key);
          if (failure !== undefined) {
            stmt.updateParkedKey.run(failure.error, failure.attempts, ref.group, ref.topic, ref.key);
          }
        },
        { durable: true, savepoint: true },
      );
    },
    recordFailure: (ref, failure) => {
      checkOpen('record a parked key failure');
      checkRef(ref);
      return write(
        () => {
          stmt.updateParkedKey.run(failure.error, failure.attempts, ref.group, ref.topic, ref.key);
        },
        { durable: true, savepoint: false },
      );
    },
    get: (ref) => {
      checkOpen('read parked keys');
      checkRef(ref);
      const row = stmt.parkedKey.get(ref.group, ref.topic, ref.key);
      return row === undefined ? undefined : toParkedKey(row);
    },
    list: (group) => {
      checkOpen('list parked keys');
      const rows = group === undefined ? stmt.parkedKeys.all() : stmt.parkedKeysOfGroup.all(group);
      return rows.map(toParkedKey);
    },
    shift: (ref) => {
      checkOpen('shift a parked key');
      checkRef(ref);
      return write(
        () => {
          const counters = stmt.parkedCounters.get(ref.group, ref.topic, ref.key);
          if (counters === undefined) return;
          const first = stmt.firstParkedEventSeq.get(ref.group, ref.topic, ref.key);
          if (first !== null && first !== undefined)
            stmt.deleteParkedEvent.run(ref.group, ref.topic, ref.key, first);
          if (counters.event_count <= 1) stmt.deleteParkedKey.run(ref.group, ref.topic, ref.key);
          else {
            stmt.setParkedCounters.run(
              counters.event_count - 1,
              counters.next_event_seq,
              ref.group,
              ref.topic,
              ref.key,
            );
          }
        },
        { durable: true, savepoint: false },
      );
    },
  };

  const inbox: InboxStore = {
    has: (group, eventId) => {
      checkOpen('read the inbox');
      const addedAt = stmt.inboxAddedAt.get(String(group), String(eventId));
      return addedAt !== undefined && addedAt >= clock.now() - inboxTtlMs;
    },
    add: (group, eventId) => {
      checkOpen('write the inbox');
      const now = clock.now();
      return write(
        () => {
          stmt.inboxAdd.run(String(group), String(eventId), now);
        },
        { durable: true, savepoint: false },
      );
    },
  };

  const requests: OperatorRequestStore = {
    add: (request) => {
      checkOpen('file an operator request');
      const checked = checkRequest(request);
      const id = randomUUID();
      const requestedAt = clock.now();
      return write(
        () => {
          stmt.addRequest.run(
            id,
            checked.group,
            checked.topic,
            checked.key,
            checked.kind,
            checked.deadLetterId ?? null,
            requestedAt,
          );
          return id;
        },
        { durable: true, savepoint: false },
      );
    },
    pending: (group, limit) => {
      checkOpen('read operator requests');
      checkInteger(limit, 'limit of requests.pending', 1, 100_000);
      return stmt.pendingRequests.all(group, limit).map(toRequest);
    },
    complete: (id, outcome) => {
      checkOpen('complete an operator request');
      if (typeof outcome !== 'object' || outcome === null || typeof outcome.ok !== 'boolean') {
        throw invalid(
          `requests.complete('${id}') needs an outcome { ok, message }, got ${describeValue(outcome)}.`,
        );
      }
      const message = String(outcome.message);
      const completedAt = clock.now();
      return write(
        () => {
          stmt.completeRequest.run(outcome.ok ? 1 : 0, message, completedAt, id);
        },
        { durable: true, savepoint: false },
      );
    },
    get: (id) => {
      checkOpen('read operator requests');
      const row = stmt.request.get(id);
      return row === undefined ? undefined : toRequestWithOutcome(row);
    },
  };

  return {
    stores: { parking, inbox, requests },
    prune: (now) => {
      stmt.inboxExpire.run(now - inboxTtlMs, pruneChunk);
      for (const group of stmt.inboxGroups.all()) {
        const cutoff = stmt.inboxCutoff.get(group, inboxMaxEntriesPerGroup);
        if (cutoff !== undefined) stmt.inboxTrim.run(group, cutoff, pruneChunk);
      }
      stmt.pruneRequests.run(now - completedRequestRetentionMs, pruneChunk);
    },
  };
}

function checkRef(ref: ParkedKeyRef): void {
  if (
    typeof ref !== 'object' ||
    ref === null ||
    typeof ref.group !== 'string' ||
    typeof ref.topic !== 'string' ||
    typeof ref.key !== 'string'
  ) {
    throw invalid(`A parked key reference needs string group, topic and key, got ${describeValue(ref)}.`);
  }
}

/**
 * The contract's `Omit<OperatorRequest, ...>` is not distributive over the union, so `deadLetterId` is read here as
 * an optional field.
 */
function checkRequest(request: Omit<OperatorRequest, 'id' | 'requestedAt'>): {
  group: string;
  topic: string;
  key: string;
  kind: OperatorRequest['kind'];
  deadLetterId?: string;
} {
  if (typeof request !== 'object' || request === null) {
    throw invalid(`requests.add needs a request object, got ${describeValue(request)}.`);
  }
  for (const field of ['group', 'topic', 'key'] as const) {
    if (typeof request[field] !== 'string') {
      throw invalid(`requests.add needs a string ${field}, got ${describeValue(request[field])}.`);
    }
  }
  const kind: unknown = request.kind;
  const base = { group: request.group, topic: request.topic, key: request.key };
  if (kind === 'retry-dead-letter') {
    const deadLetterId = (request as { deadLetterId?: unknown }).deadLetterId;
    if (typeof deadLetterId !== 'string') {
      throw invalid(`requests.add of kind 'retry-dead-letter' needs a deadLetterId '<partition>:<offset>'.`);
    }
    return { ...base, kind, deadLetterId };
  }
  if (kind !== 'retry-parked' && kind !== 'skip-parked') {
    throw invalid(
      `requests.add got kind ${describeValue(kind)}; use 'retry-parked', 'skip-parked' or 'retry-dead-letter'.`,
    );
  }
  return { ...base, kind };
}

function toRequest(row: RequestRow): OperatorRequest {
  const base = {
    id: row.id,
    group: row.group_name,
    topic: row.topic,
    key: row.key,
    requestedAt: row.requested_at,
  };
  if (row.kind === 'retry-dead-letter') {
    return { ...base, kind: 'retry-dead-letter', deadLetterId: row.dead_letter_id ?? '' };
  }
  return { ...base, kind: row.kind === 'skip-parked' ? 'skip-parked' : 'retry-parked' };
}

function toRequestWithOutcome(row: RequestRow): OperatorRequest & { outcome?: OperatorRequestOutcome } {
  const request: OperatorRequest & { outcome?: OperatorRequestOutcome } = toRequest(row);
  if (row.outcome_ok !== null)
    request.outcome = { ok: row.outcome_ok === 1, message: row.outcome_message ?? '' };
  return request;
}
