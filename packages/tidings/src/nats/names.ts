/**
 * How Tidings names map onto NATS names: streams, subjects, durable consumers and key-value keys.
 *
 * Topic and group names are arbitrary strings (up to 249 characters); NATS names are not (stream and consumer names
 * exclude `.`, `*`, `>`, whitespace and path separators; subject tokens and KV keys have their own alphabets). Each
 * name becomes one *token*: letters, digits and `-` stay as they are, every other UTF-8 byte becomes `_XX` (two
 * upper-case hex digits). The mapping is injective and valid in every NATS position. A token longer than
 * {@link tokenLengthMax} is replaced by `_h` and 40 hex digits of the name's SHA-256 (never produced by the escaping,
 * whose hex digits are upper case), so stream directory names stay short; the real name is kept in the stream's
 * description and in key-value values, never parsed back from a token.
 */
import { createHash } from 'node:crypto';

/** Longest token kept readable; longer ones are hashed. */
export const tokenLengthMax = 96;

/** The NATS-safe token of a topic or group name. */
export function token(name: string): string {
  let out = '';
  for (const byte of Buffer.from(name, 'utf8')) {
    const isAlnum =
      (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
    out +=
      isAlnum || byte === 0x2d
        ? String.fromCharCode(byte)
        : `_${byte.toString(16).toUpperCase().padStart(2, '0')}`;
    if (out.length > tokenLengthMax) break;
  }
  if (out.length <= tokenLengthMax) return out;
  return `_h${createHash('sha256').update(name, 'utf8').digest('hex').slice(0, 40)}`;
}

/** Names of everything one transport creates under its prefix. */
export class NatsNames {
  readonly prefix: string;
  /** The key-value bucket holding group membership, ownership and committed positions. */
  readonly bucket: string;
  /** The JetStream stream behind {@link bucket} (the KV convention `KV_<bucket>`). */
  readonly bucketStream: string;
  /** Subject prefix of the bucket's keys (the KV convention `$KV.<bucket>.`). */
  readonly bucketSubjectPrefix: string;

  constructor(prefix: string) {
    this.prefix = prefix;
    this.bucket = `${prefix}-groups`;
    this.bucketStream = `KV_${this.bucket}`;
    this.bucketSubjectPrefix = `$KV.${this.bucket}.`;
  }

  /** The stream holding one partition of a topic: `<prefix>_<topic token>_<partition>`. */
  stream(topic: string, partition: number): string {
    return `${this.prefix}_${token(topic)}_${partition}`;
  }

  /** The only subject of a partition's stream: `<prefix>.<topic token>.<partition>`. */
  subject(topic: string, partition: number): string {
    return `${this.prefix}.${token(topic)}.${partition}`;
  }

  /** True when a stream name belongs to this prefix and is the first partition of a topic. */
  isFirstPartitionStream(stream: string): boolean {
    return stream.startsWith(`${this.prefix}_`) && stream.endsWith('_0');
  }

  /**
   * The durable consumer of `group` on one partition stream for ownership epoch `epoch`. Every epoch has its own
   * consumer, so acknowledgements of a fenced owner land on a consumer that no longer counts.
   */
  consumer(group: string, epoch: number): string {
    return `${token(group)}_${epoch}`;
  }

  /** Key-value key of a group's registration (written once, so `listGroups` finds groups without members). */
  groupKey(group: string): string {
    return `g.${token(group)}`;
  }

  /** Key-value key of a member's lease. */
  memberKey(group: string, memberId: string): string {
    return `m.${token(group)}.${memberId}`;
  }

  /** Key-value key of a group partition's ownership and committed position. */
  ownershipKey(group: string, topic: string, partition: number): string {
    return `o.${token(group)}.${token(topic)}.${partition}`;
  }

  /** Key-value key filter matching a group's members and ownerships (what a member watches). */
  groupFilter(group: string): string {
    return `*.${token(group)}.>`;
  }

  /** Key-value key filter of one kind of entry of a group: `m` members, `o` ownerships. */
  kindFilter(kind: 'm' | 'o', group: string): string {
    return `${kind}.${token(group)}.>`;
  }
}
