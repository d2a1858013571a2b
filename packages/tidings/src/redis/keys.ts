/**
 * The key layout. Records live in one stream per partition, `<prefix>:<topic>:<partition>` (the topic name as is, so
 * `redis-cli` users find them). Everything else lives under `<prefix>#`, with group and topic names percent-encoded
 * (`encodeURIComponent`: `:`, `#` and `|` never appear raw), so no two names map to one key and no bookkeeping key
 * can be mistaken for a stream:
 *
 * | key                                   | type   | holds                                                          |
 * |---------------------------------------|--------|----------------------------------------------------------------|
 * | `#topics`                             | hash   | topic → JSON config (`partitions`, `retentionMs`, `retentionBytes`) |
 * | `#next:<t>`                           | hash   | per partition p: `o<p>` next offset, `l<p>` low offset, `t<p>` last id ms, `b<p>` bytes held |
 * | `#idx:<t>:<p>`                        | zset   | sparse offset index: every 32nd offset (score) → its entry id   |
 * | `#groups`                             | set    | group names                                                    |
 * | `#gtopics:<g>`                        | hash   | topic → encoded name, of topics the group consumed or was reset on |
 * | `#members:<g>`                        | zset   | member id, scored by join order                                 |
 * | `#info:<g>`                           | hash   | member id → JSON `{ topics, host, pid }`                        |
 * | `#lease:<g>:<member>`                 | string | the member's lease (`SET ... PX leaseMs`)                       |
 * | `#owner:<g>:<t>:<p>`                  | string | `<member>|<epoch>` of the partition's owner (`SET NX`-like, `PX leaseMs`) |
 * | `#epoch:<g>`                          | hash   | `<t>:<p>` → ownership epoch counter                             |
 * | `#delay:<g>:<t>:<p>`                  | hash   | entry id → due time (ms) of a nack with a delay                 |
 * | `#changed:<g>`                        | channel| published on every join, leave, claim and release               |
 * | `#seq`                                | string | join order counter                                              |
 *
 * The Lua scripts (`scripts.ts`) build the same names from the prefix and the encoded names they are given.
 */

/** A name as it appears inside a bookkeeping key. */
export function encodeName(name: string): string {
  return encodeURIComponent(name);
}

export class Keys {
  readonly prefix: string;
  readonly topics: string;
  readonly groups: string;

  constructor(prefix: string) {
    this.prefix = prefix;
    this.topics = `${prefix}#topics`;
    this.groups = `${prefix}#groups`;
  }

  stream(topic: string, partition: number): string {
    return `${this.prefix}:${topic}:${partition}`;
  }

  next(topic: string): string {
    return `${this.prefix}#next:${encodeName(topic)}`;
  }

  index(topic: string, partition: number): string {
    return `${this.prefix}#idx:${encodeName(topic)}:${partition}`;
  }

  owner(group: string, topic: string, partition: number): string {
    return `${this.prefix}#owner:${encodeName(group)}:${encodeName(topic)}:${partition}`;
  }

  delay(group: string, topic: string, partition: number): string {
    return `${this.prefix}#delay:${encodeName(group)}:${encodeName(topic)}:${partition}`;
  }

  changed(group: string): string {
    return `${this.prefix}#changed:${encodeName(group)}`;
  }
}
