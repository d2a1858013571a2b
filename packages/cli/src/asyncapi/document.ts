/**
 * An AsyncAPI 3.0 document from the topology: one channel per topic, one message per event or command type (its
 * payload the JSON Schema the bus recorded, its headers the CloudEvents binary-mode attributes), one `send`
 * operation per producing service and topic, and one `receive` operation per consuming group and topic.
 */
import type { JsonSchema } from 'tidings';
import type { Topology, TopologyType } from '../topology/model.js';

/** What the document says about the API as a whole. */
export interface AsyncApiInfo {
  title: string;
  version: string;
  description?: string;
}

/** A JSON document, as `tidings asyncapi` writes it. */
export type AsyncApiDocument = Record<string, unknown>;

/** An id usable as a key of `channels`, `operations` and `components` (`^[A-Za-z0-9._-]+$`). */
export function asyncApiId(name: string): string {
  return name.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** A JSON Pointer token (RFC 6901). */
const pointer = (token: string) => token.replace(/~/g, '~0').replace(/\//g, '~1');

/**
 * The payload schema as an AsyncAPI Schema object (a superset of JSON Schema draft 7): `$schema` and `$id` are left
 * out, since the document's default schema format applies; `$defs` become `definitions` so local references keep
 * resolving.
 */
function payloadSchema(schema: JsonSchema): JsonSchema {
  const { $schema: _schema, $id: _id, $defs, ...rest } = schema as Record<string, unknown>;
  void _schema;
  void _id;
  const text = JSON.stringify($defs === undefined ? rest : { ...rest, definitions: $defs });
  return JSON.parse(text.replace(/"#\/\$defs\//g, '"#/definitions/')) as JsonSchema;
}

/** The CloudEvents binary-mode headers every Tidings message carries (the optional ones when set). */
const headersSchema = {
  type: 'object',
  required: ['ce-id', 'ce-source', 'ce-type', 'ce-specversion'],
  properties: {
    'content-type': { type: 'string', description: 'The content type of the payload, application/json.' },
    'ce-id': { type: 'string', description: 'The event id, unique per event (a UUIDv7 by default).' },
    'ce-source': { type: 'string', description: 'The producing service, tidings://<service>.' },
    'ce-type': { type: 'string', description: 'The event or command type.' },
    'ce-specversion': { type: 'string', const: '1.0' },
    'ce-time': { type: 'string', format: 'date-time', description: 'When the fact happened.' },
    'ce-subject': { type: 'string', description: 'The aggregate key.' },
    'ce-partitionkey': { type: 'string', description: 'The key that chose the partition.' },
    'ce-schemaversion': {
      type: 'string',
      description: 'The schema version of the payload, a positive integer.',
    },
    'ce-correlationid': { type: 'string', description: 'The id shared by every event of one flow.' },
    'ce-causationid': {
      type: 'string',
      description: 'The id of the event whose handling published this one.',
    },
    'ce-traceparent': { type: 'string', description: 'W3C trace context of the producing span.' },
    'ce-tracestate': { type: 'string', description: 'W3C trace state.' },
  },
} as const;

function messageOf(type: TopologyType): Record<string, unknown> {
  const producers = type.producers.map((p) => p.service);
  return {
    name: type.type,
    title: type.type,
    summary: `${type.kind === 'command' ? 'Command' : 'Event'} ${type.type}, schema version ${type.version}.`,
    description:
      `Published by ${producers.length === 0 ? 'no known service' : producers.join(', ')}; ` +
      `consumed by ${type.consumers.length === 0 ? 'no group' : type.consumers.map((c) => c.group).join(', ')}.` +
      (type.schema === undefined ? ' No JSON Schema was recorded for its payload.' : ''),
    contentType: 'application/json',
    headers: headersSchema,
    correlationId: {
      description: 'The flow this event belongs to; `tidings trace <id>` shows it.',
      location: '$message.header#/ce-correlationid',
    },
    ...(type.schema === undefined ? {} : { payload: payloadSchema(type.schema) }),
    'x-tidings-kind': type.kind,
    'x-tidings-schema-version': type.version,
  };
}

/** Builds the document. Types are grouped by topic; ids are sanitised with {@link asyncApiId}. */
export function buildAsyncApi(topology: Topology, info: AsyncApiInfo): AsyncApiDocument {
  const channels: Record<string, unknown> = {};
  const operations: Record<string, unknown> = {};
  const messages: Record<string, unknown> = {};
  const byTopic = new Map<string, TopologyType[]>();
  for (const type of topology.types) {
    const list = byTopic.get(type.topic) ?? [];
    list.push(type);
    byTopic.set(type.topic, list);
  }
  const sends = new Map<string, { service: string; topic: string; types: string[] }>();
  const receives = new Map<string, { group: string; services: string[]; topic: string; types: string[] }>();
  for (const [topic, types] of [...byTopic].sort(([a], [b]) => a.localeCompare(b))) {
    const channelId = asyncApiId(topic);
    const channelMessages: Record<string, unknown> = {};
    for (const type of types) {
      const messageId = asyncApiId(type.type);
      messages[messageId] = messageOf(type);
      channelMessages[messageId] = { $ref: `#/components/messages/${pointer(messageId)}` };
      for (const producer of type.producers) {
        const id = `${producer.service}\u0000${topic}`;
        const entry = sends.get(id) ?? { service: producer.service, topic, types: [] };
        entry.types.push(type.type);
        sends.set(id, entry);
      }
      for (const consumer of type.consumers) {
        const id = `${consumer.group}\u0000${topic}`;
        const entry = receives.get(id) ?? { group: consumer.group, services: [], topic, types: [] };
        entry.types.push(type.type);
        for (const service of consumer.services)
          if (!entry.services.includes(service)) entry.services.push(service);
        receives.set(id, entry);
      }
    }
    channels[channelId] = {
      address: topic,
      title: topic,
      description: `The Tidings topic "${topic}": ${types.map((t) => t.type).join(', ')}, partitioned by aggregate key.`,
      messages: channelMessages,
    };
  }
  const messageRefs = (topic: string, types: readonly string[]) =>
    types.map((type) => ({
      $ref: `#/channels/${pointer(asyncApiId(topic))}/messages/${pointer(asyncApiId(type))}`,
    }));
  for (const { service, topic, types } of sends.values()) {
    operations[asyncApiId(`${service}.send.${topic}`)] = {
      action: 'send',
      channel: { $ref: `#/channels/${pointer(asyncApiId(topic))}` },
      title: `${service} publishes to ${topic}`,
      summary: `Service ${service} publishes ${types.join(', ')}.`,
      messages: messageRefs(topic, types),
      'x-tidings-service': service,
    };
  }
  for (const { group, services, topic, types } of receives.values()) {
    operations[asyncApiId(`${group}.receive.${topic}`)] = {
      action: 'receive',
      channel: { $ref: `#/channels/${pointer(asyncApiId(topic))}` },
      title: `${group} consumes ${topic}`,
      summary: `Consumer group ${group}${services.length === 0 ? '' : ` (service ${services.join(', ')})`} handles ${types.join(', ')}.`,
      messages: messageRefs(topic, types),
      'x-tidings-group': group,
    };
  }
  return {
    asyncapi: '3.0.0',
    info: {
      title: info.title,
      version: info.version,
      ...(info.description === undefined ? {} : { description: info.description }),
    },
    defaultContentType: 'application/json',
    channels,
    operations,
    components: { messages },
  };
}
