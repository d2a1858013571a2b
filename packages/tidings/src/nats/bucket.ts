/**
 * A small key-value store with compare-and-set over one JetStream stream, laid out as a NATS KV bucket (stream
 * `KV_<bucket>`, subjects `$KV.<bucket>.<key>`, one message kept per key, deletes as `KV-Operation: DEL` markers), so
 * `nats kv ls/get/watch` can inspect it. A key's revision is the stream sequence of its last write; `create` and
 * `update` are conditional on it (`Nats-Expected-Last-Subject-Sequence`), which is what the group protocol's fencing
 * rests on. Values are JSON.
 *
 * Written here rather than taken from `@nats-io/kv` to keep the transport to the two client packages it declares.
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  StorageType,
  type ConsumerMessages,
  type JsMsg,
} from '@nats-io/jetstream';
import { headers as createHeaders, type MsgHdrs } from '@nats-io/transport-node';
import type { NatsConnector, NatsSession } from './connection.js';
import { isStreamNotFound, isWrongLastSequence } from './failures.js';
import type { NatsNames } from './names.js';
import { messageTimeMs } from './records.js';

/** One key's latest write. */
export interface BucketEntry<T = unknown> {
  readonly key: string;
  /** The parsed value; `undefined` for a delete marker. */
  readonly value: T | undefined;
  /** Stream sequence of the write: what `update` and `delete` compare with. */
  readonly revision: number;
  /** Server time of the write, ms since the epoch. */
  readonly writtenAtMs: number;
  readonly deleted: boolean;
}

const operationHeader = 'KV-Operation';
const encoder = new TextEncoder();
const decoder = new TextDecoder();
/** Concurrent gets of one `list` call. */
const listConcurrency = 16;

export class GroupBucket {
  private readonly connector: NatsConnector;
  private readonly names: NatsNames;
  private readonly replicas: number;
  private ready: Promise<void> | undefined;

  constructor(connector: NatsConnector, names: NatsNames, replicas: number) {
    this.connector = connector;
    this.names = names;
    this.replicas = replicas;
  }

  /** The session, with the bucket's stream created if missing. */
  async session(): Promise<NatsSession> {
    const session = await this.connector.get();
    this.ready ??= this.createStream(session).catch((error: unknown) => {
      this.ready = undefined;
      throw error;
    });
    await this.ready;
    return session;
  }

  private async createStream(session: NatsSession): Promise<void> {
    try {
      await session.jsm.streams.info(this.names.bucketStream);
      return;
    } catch (error) {
      if (!isStreamNotFound(error)) throw error;
    }
    try {
      await session.jsm.streams.add({
        name: this.names.bucketStream,
        description: 'Tidings consumer groups: member leases, partition ownership, committed positions.',
        subjects: [`${this.names.bucketSubjectPrefix}>`],
        max_msgs_per_subject: 1,
        discard: DiscardPolicy.New,
        allow_rollup_hdrs: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        storage: StorageType.File,
        num_replicas: this.replicas,
      });
    } catch (error) {
      // Created meanwhile by another client: fine if it exists now.
      await session.jsm.streams.info(this.names.bucketStream).catch(() => {
        throw error;
      });
    }
  }

  private subject(key: string): string {
    return this.names.bucketSubjectPrefix + key;
  }

  /** The latest write of `key` (a delete marker included), or undefined if it was never written. */
  async get<T>(key: string): Promise<BucketEntry<T> | undefined> {
    const session = await this.session();
    const message = await session.jsm.streams.getMessage(this.names.bucketStream, {
      last_by_subj: this.subject(key),
    });
    if (message === null) return undefined;
    return entryOf<T>(key, message.seq, message.time.getTime(), message.header, message.data);
  }

  /** Writes `value` unconditionally; resolves with the new revision. */
  async put(key: string, value: unknown): Promise<number> {
    const session = await this.session();
    const ack = await session.js.publish(this.subject(key), encoder.encode(JSON.stringify(value)));
    return ack.seq;
  }

  /**
   * Writes `value` if the key's latest revision is `revision` (0: the key was never written). Resolves with the new
   * revision, or `undefined` if another write came first.
   */
  async update(key: string, value: unknown, revision: number): Promise<number | undefined> {
    const session = await this.session();
    try {
      const ack = await session.js.publish(this.subject(key), encoder.encode(JSON.stringify(value)), {
        expect: { lastSubjectSequence: revision },
      });
      return ack.seq;
    } catch (error) {
      if (isWrongLastSequence(error)) return undefined;
      throw error;
    }
  }

  /** Writes `value` if the key does not exist (never written, or deleted). Undefined if it exists. */
  async create(key: string, value: unknown): Promise<number | undefined> {
    const existing = await this.get(key);
    if (existing !== undefined && !existing.deleted) return undefined;
    return this.update(key, value, existing?.revision ?? 0);
  }

  /** Writes a delete marker, unconditionally or if the latest revision is `revision`. False if the CAS lost. */
  async delete(key: string, revision?: number): Promise<boolean> {
    const session = await this.session();
    const headers = createHeaders();
    headers.set(operationHeader, 'DEL');
    try {
      await session.js.publish(this.subject(key), new Uint8Array(0), {
        headers,
        ...(revision === undefined ? {} : { expect: { lastSubjectSequence: revision } }),
      });
      return true;
    } catch (error) {
      if (isWrongLastSequence(error)) return false;
      throw error;
    }
  }

  /**
   * Removes every write of `key`, delete marker included, so the bucket does not keep a marker per member that ever
   * left. Watchers are not told (they saw the delete marker before).
   */
  async purge(key: string): Promise<void> {
    const session = await this.session();
    await session.jsm.streams.purge(this.names.bucketStream, { filter: this.subject(key) });
  }

  /** The latest write of every key matching `filter` (NATS wildcards), delete markers left out. */
  async list<T>(filter: string): Promise<Array<BucketEntry<T>>> {
    const session = await this.session();
    const info = await session.jsm.streams.info(this.names.bucketStream, {
      subjects_filter: this.subject(filter),
    });
    const subjects = Object.keys(info.state.subjects ?? {});
    const entries: Array<BucketEntry<T>> = [];
    for (let i = 0; i < subjects.length; i += listConcurrency) {
      const batch = subjects.slice(i, i + listConcurrency);
      const found = await Promise.all(
        batch.map((subject) => this.get<T>(subject.slice(this.names.bucketSubjectPrefix.length))),
      );
      for (const entry of found) if (entry !== undefined && !entry.deleted) entries.push(entry);
    }
    return entries;
  }

  /**
   * Follows every key matching `filter`: `onSnapshot` gets the full current state (delete markers included) once
   * the watch has caught up, and again after every restart; `onChange` each later write in order. The watch restarts
   * from a fresh snapshot whenever it may have missed a write (a disconnect, a gap in the delivery sequence, the
   * server forgetting the consumer), so a watcher's view never silently diverges. `stop()` ends it.
   */
  watch<T>(
    filter: string,
    onSnapshot: (entries: ReadonlyMap<string, BucketEntry<T>>) => void,
    onChange: (entry: BucketEntry<T>) => void,
    onError: (error: unknown) => void,
  ): { stop(): void } {
    let stopped = false;
    let messages: ConsumerMessages | undefined;
    const run = async () => {
      let failures = 0;
      while (!stopped) {
        try {
          await this.followOnce<T>(filter, onSnapshot, onChange, (m) => {
            messages = m;
            if (stopped) m.stop();
          });
          failures = 0;
        } catch (error) {
          if (stopped) return;
          onError(error);
          failures++;
        }
        if (stopped) return;
        await new Promise((resolve) => setTimeout(resolve, Math.min(2_000, 50 * 2 ** Math.min(failures, 6))));
      }
    };
    void run();
    return {
      stop: () => {
        stopped = true;
        messages?.stop();
      },
    };
  }

  private async followOnce<T>(
    filter: string,
    onSnapshot: (entries: ReadonlyMap<string, BucketEntry<T>>) => void,
    onChange: (entry: BucketEntry<T>) => void,
    started: (messages: ConsumerMessages) => void,
  ): Promise<void> {
    const session = await this.session();
    const info = await session.jsm.consumers.add(this.names.bucketStream, {
      ack_policy: AckPolicy.None,
      deliver_policy: DeliverPolicy.LastPerSubject,
      filter_subject: this.subject(filter),
      mem_storage: true,
      inactive_threshold: 30_000_000_000,
      num_replicas: 1,
    });
    const consumer = session.js.consumers.getConsumerFromInfo(info);
    const snapshot = new Map<string, BucketEntry<T>>();
    let live = false;
    let expectedDelivery = 1;
    const goLive = () => {
      live = true;
      onSnapshot(snapshot);
    };
    if (info.num_pending === 0) goLive();
    const messages = await consumer.consume({ max_messages: 256, expires: 10_000 });
    started(messages);
    // Anything that may have dropped a write ends this round; the caller starts over from a fresh snapshot.
    const status = (async () => {
      for await (const event of messages.status()) {
        if (
          event.type === 'heartbeats_missed' ||
          event.type === 'consumer_deleted' ||
          event.type === 'consumer_not_found'
        ) {
          messages.stop();
        }
      }
    })();
    const offDisconnect = this.connector.onDisconnect(() => messages.stop());
    try {
      for await (const message of messages) {
        if (message.info.deliverySequence !== expectedDelivery) break; // a gap: start over
        expectedDelivery++;
        const entry = entryFromMessage<T>(this.names.bucketSubjectPrefix, message);
        if (live) {
          onChange(entry);
        } else {
          snapshot.set(entry.key, entry);
          if (message.info.pending === 0) goLive();
        }
      }
    } finally {
      messages.stop();
      offDisconnect();
      await status;
      await session.jsm.consumers.delete(this.names.bucketStream, info.name).catch(() => undefined);
    }
  }
}

function entryFromMessage<T>(subjectPrefix: string, message: JsMsg): BucketEntry<T> {
  return entryOf<T>(
    message.subject.slice(subjectPrefix.length),
    message.seq,
    messageTimeMs(message),
    message.headers,
    message.data,
  );
}

function entryOf<T>(
  key: string,
  revision: number,
  writtenAtMs: number,
  headers: MsgHdrs | undefined,
  data: Uint8Array,
): BucketEntry<T> {
  const operation = headers?.get(operationHeader) ?? '';
  const deleted = operation === 'DEL' || operation === 'PURGE';
  let value: T | undefined;
  if (!deleted && data.length > 0) {
    try {
      value = JSON.parse(decoder.decode(data)) as T;
    } catch {
      value = undefined;
    }
  }
  return { key, value, revision, writtenAtMs, deleted: deleted || value === undefined };
}
