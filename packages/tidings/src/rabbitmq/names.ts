/**
 * Names of the exchanges and queues the transport declares. Topic and group names are arbitrary strings; a name made
 * only of letters, digits, '_' and '-' is used as it is (so operators recognise it in `rabbitmqctl list_queues`),
 * anything else, or a combination longer than AMQP's 255-byte limit, by a SHA-256 digest. The registry stream keeps
 * the real names.
 */
import { createHash } from 'node:crypto';

const plain = /^[A-Za-z0-9_-]+$/;
const maxNameBytes = 255;

function part(name: string): string {
  return plain.test(name) && name.length <= 100 ? name : `~${digest(name)}`;
}

function digest(text: string): string {
  return createHash('sha256').update(text, 'utf8').digest('base64url').slice(0, 32);
}

function fit(name: string, prefix: string): string {
  return Buffer.byteLength(name, 'utf8') <= maxNameBytes ? name : `${prefix}.~${digest(name)}`;
}

export class Names {
  constructor(readonly prefix: string) {}

  /** The stream listing every topic and group (JSON records), read whole by admin calls. */
  get registry(): string {
    return `${this.prefix}.registry`;
  }

  /** The direct exchange a topic's records are published to, routed by partition number. */
  topicExchange(topic: string): string {
    return fit(`${this.prefix}.t.${part(topic)}`, `${this.prefix}.t`);
  }

  /** The stream that holds one partition of a topic: the source of truth for its records and offsets. */
  partitionStream(topic: string, partition: number): string {
    return fit(`${this.prefix}.t.${part(topic)}.${partition}`, `${this.prefix}.t`);
  }

  /** The stream a group's members announce themselves on (heartbeats, progress, leaving). */
  groupStream(group: string): string {
    return fit(`${this.prefix}.g.${part(group)}`, `${this.prefix}.g`);
  }

  /**
   * The quorum queue, with a single active consumer, that holds a group's committed position in one partition and
   * whose active consumer owns the partition.
   */
  offsetQueue(group: string, topic: string, partition: number): string {
    return fit(`${this.prefix}.o.${part(group)}.${part(topic)}.${partition}`, `${this.prefix}.o`);
  }
}
