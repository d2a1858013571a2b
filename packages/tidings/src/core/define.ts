import { ErrorCode, TidingsError } from './errors.js';
import { toJsonSchema, type JsonSchema, type JsonSchemaConverter } from './json-schema.js';
import { checkCommandName, checkEventName, type NamingMode } from './naming.js';
import { isStandardSchema, type SchemaInput, type SchemaOutput, type StandardSchemaV1 } from './schema.js';

const definitionBrand = Symbol.for('tidings.definition');

/** How the aggregate key is taken from a payload: a property name, or a function. */
export type KeySelector<TData> = (keyof TData & string) | ((data: TData) => string);

interface DefinitionBase<TType extends string, TSchema extends StandardSchemaV1> {
  readonly type: TType;
  readonly schema: TSchema;
  /** The schema version events are written with now (a positive integer; 1 for a new type). */
  readonly version: number;
  /** The topic the message travels on. */
  readonly topic: string;
  /** The aggregate key of a payload: decides partition and order. */
  keyOf(data: SchemaOutput<TSchema>): string;
  /**
   * The JSON Schema of the payload (what publishers write), for the schema registry, AsyncAPI and other tools: the
   * definition's `jsonSchema` option, else derived from the schema (see {@link toJsonSchema}). Throws
   * `INVALID_CONFIG` when neither is available and no `converter` yields one.
   */
  jsonSchema(converter?: JsonSchemaConverter): JsonSchema;
  /**
   * Brings a payload written with schema version `fromVersion` up to the current {@link version} by running the
   * definition's upcasters in order (`fromVersion` → `fromVersion + 1` → ... → `version`), before it is validated.
   * Returns `data` unchanged for the current version, or for a definition without upcasters. Rejects with
   * `UNKNOWN_VERSION` for a version newer than the current one and with `SCHEMA_INVALID` when an upcaster throws.
   */
  upcast(data: unknown, fromVersion: number): Promise<unknown>;
  readonly [definitionBrand]: true;
}

/**
 * An event type: an immutable fact, named in the past tense, that any number of consumer groups may react to.
 * Created by {@link defineEvent}.
 */
export interface EventDefinition<
  TType extends string = string,
  TSchema extends StandardSchemaV1 = StandardSchemaV1,
> extends DefinitionBase<TType, TSchema> {
  readonly kind: 'event';
}

/**
 * A command type: a request, named in the imperative, with exactly one handler. Created by {@link defineCommand}.
 */
export interface CommandDefinition<
  TType extends string = string,
  TSchema extends StandardSchemaV1 = StandardSchemaV1,
> extends DefinitionBase<TType, TSchema> {
  readonly kind: 'command';
}

/** An event or a command definition. */
export type MessageDefinition = EventDefinition | CommandDefinition;

/** The payload a publisher passes for a definition (the schema's input type). */
export type InputOf<D extends MessageDefinition> = SchemaInput<D['schema']>;
/** The payload a handler receives for a definition (the schema's output type). */
export type DataOf<D extends MessageDefinition> = SchemaOutput<D['schema']>;

export interface DefineOptions<TSchema extends StandardSchemaV1> {
  /** Any Standard Schema: zod 4, valibot 1, ArkType, TypeBox with its Standard Schema adapter, ... */
  schema: TSchema;
  /** The aggregate key: a property of the payload, or a function of it. Same key, same partition, same order. */
  key: KeySelector<SchemaOutput<TSchema>>;
  /** The current schema version, a positive integer. Default 1. */
  version?: number;
  /**
   * The topic. Events of one aggregate that must stay in order relative to each other share a topic
   * (e.g. `orders` for OrderPlaced and OrderShipped). Default: the type name for events, `commands.<type>` for
   * commands.
   */
  topic?: string;
  /** What the naming check does with a finding: `'warn'` (default, a process warning), `'error'` or `'off'`. */
  naming?: NamingMode;
  /**
   * The payload's JSON Schema, for schema libraries that cannot produce one (a TypeBox schema is one as is).
   * Default: derived from `schema` when it supports Standard JSON Schema (zod 4.2+).
   */
  jsonSchema?: JsonSchema;
  /**
   * Upcasters: for each earlier version `n` (exactly `1` to `version - 1`), a function turning a version-`n` payload
   * into a version-`n + 1` one, e.g. `{ 1: (v1) => ({ ...v1, currency: 'EUR' }), 2: (v2) => v3 }`. Consumers run
   * the chain on older events, so handlers always receive the current version. Default: none (older payloads are
   * validated against the current schema as they are).
   */
  upcast?: Upcasters;
}

/**
 * A function from a payload of one version to the next (synchronous or async). The parameter is typed loosely on
 * purpose: it is the *old* shape, which the current schema's types no longer describe.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Upcaster = (data: any) => unknown;

/** Upcasters by the version they read: `{ 1: v1 => v2, 2: v2 => v3 }`. */
export type Upcasters = { readonly [fromVersion: number]: Upcaster };

/** Validates the common options and builds the definition object. */
function define<TKind extends 'event' | 'command', TType extends string, TSchema extends StandardSchemaV1>(
  kind: TKind,
  type: TType,
  options: DefineOptions<TSchema>,
  findings: string[],
): DefinitionBase<TType, TSchema> & { kind: TKind } {
  const where = `define${kind === 'event' ? 'Event' : 'Command'}("${type}")`;
  if (typeof type !== 'string' || !/^[A-Za-z][A-Za-z0-9_.-]{0,199}$/.test(type)) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: the type must start with a letter and contain only letters, digits, '_', '.' and '-' (at most 200 characters)`,
    );
  }
  if (!isStandardSchema(options.schema)) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: "schema" must be a Standard Schema (zod 4, valibot 1, ArkType, ...); got ${typeof options.schema}`,
    );
  }
  const version = options.version ?? 1;
  if (!Number.isInteger(version) || version < 1) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: "version" must be a positive integer, got ${version}`,
    );
  }
  const topic = options.topic ?? (kind === 'event' ? type : `commands.${type}`);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,248}$/.test(topic)) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: topic "${topic}" must contain only letters, digits, '_', '.' and '-' and start with a letter or digit`,
    );
  }
  const key = options.key;
  let keyOf: (data: SchemaOutput<TSchema>) => string;
  if (typeof key === 'function') {
    keyOf = (data) => String(key(data));
  } else if (typeof key === 'string') {
    keyOf = (data) => String((data as Record<string, unknown>)[key]);
  } else {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: "key" must name a payload property or be a function returning the aggregate key`,
    );
  }
  const upcasters = checkUpcasters(where, options.upcast, version);
  reportNaming(where, options.naming ?? 'warn', findings);
  const schema = options.schema;
  const givenJsonSchema = options.jsonSchema;
  return Object.freeze({
    kind,
    type,
    schema,
    version,
    topic,
    keyOf,
    jsonSchema: (converter?: JsonSchemaConverter) => toJsonSchema(where, schema, givenJsonSchema, converter),
    upcast: (data: unknown, fromVersion: number) => runUpcasters(type, version, upcasters, data, fromVersion),
    [definitionBrand]: true as const,
  });
}

/** Validates the `upcast` option: keys exactly 1 .. version - 1, each a function. Returns them by version. */
function checkUpcasters(
  where: string,
  upcast: Upcasters | undefined,
  version: number,
): Map<number, Upcaster> {
  const chain = new Map<number, Upcaster>();
  if (upcast === undefined) return chain;
  const expected = Array.from({ length: version - 1 }, (_, index) => String(index + 1));
  if (typeof upcast !== 'object' || upcast === null || Array.isArray(upcast)) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: "upcast" must be an object of functions by version, e.g. { 1: (v1) => v2 }`,
    );
  }
  const keys = Object.keys(upcast);
  const missing = expected.filter((key) => !keys.includes(key));
  const extra = keys.filter((key) => !expected.includes(key));
  if (missing.length > 0 || extra.length > 0) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `${where}: "upcast" must have one function for each earlier version, ${
        version === 1 ? 'none for version 1' : `1 to ${version - 1}`
      }` +
        (missing.length > 0 ? `; missing ${missing.join(', ')}` : '') +
        (extra.length > 0 ? `; unexpected ${extra.join(', ')}` : ''),
    );
  }
  for (const key of keys) {
    const fn = upcast[Number(key)];
    if (typeof fn !== 'function') {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `${where}: upcast[${key}] must be a function from a version-${key} payload to a version-${Number(key) + 1} one`,
      );
    }
    chain.set(Number(key), fn);
  }
  return chain;
}

async function runUpcasters(
  type: string,
  version: number,
  chain: ReadonlyMap<number, Upcaster>,
  data: unknown,
  fromVersion: number,
): Promise<unknown> {
  if (!Number.isInteger(fromVersion) || fromVersion < 1 || fromVersion > version) {
    throw new TidingsError(
      ErrorCode.UNKNOWN_VERSION,
      `${type} version ${fromVersion} is not one this definition knows (1 to ${version}); deploy the newer definition`,
      { eventType: type, retryable: false },
    );
  }
  if (chain.size === 0) return data;
  let value = data;
  for (let from = fromVersion; from < version; from++) {
    const step = chain.get(from)!; // checkUpcasters requires one step for every earlier version
    try {
      value = await step(value);
    } catch (error) {
      throw new TidingsError(
        ErrorCode.SCHEMA_INVALID,
        `${type}: upcasting from version ${from} to ${from + 1} failed (${
          error instanceof Error ? error.message : String(error)
        }); fix upcast[${from}] in the definition, then retry the dead letter`,
        { eventType: type, retryable: false, cause: error },
      );
    }
  }
  return value;
}

function reportNaming(where: string, mode: NamingMode, findings: string[]): void {
  if (mode === 'off' || findings.length === 0) return;
  const message = `${where}: ${findings.join('; ')}. Set naming: 'off' on this definition to silence this.`;
  if (mode === 'error') throw new TidingsError(ErrorCode.INVALID_CONFIG, message);
  process.emitWarning(message, { code: 'TIDINGS_NAMING' });
}

/**
 * Defines an event type: a fact in the past tense (`OrderPlaced`), validated by `schema` at publish time, keyed by
 * its aggregate so events of one aggregate stay in order.
 *
 * Throws `INVALID_CONFIG` at once for a bad type, schema, version, key or topic, and (with `naming: 'error'`) for a
 * name that reads as a command or table operation; with the default `naming: 'warn'` such a name emits a process
 * warning with code `TIDINGS_NAMING`.
 */
export function defineEvent<const TType extends string, TSchema extends StandardSchemaV1>(
  type: TType,
  options: DefineOptions<TSchema>,
): EventDefinition<TType, TSchema> {
  return define('event', type, options, checkEventName(type));
}

/**
 * Defines a command type: a request in the imperative (`PlaceOrder`) that exactly one handler serves. Commands
 * travel on their own topic (`commands.<type>` by default) and are sent with `bus.send`.
 *
 * Throws as {@link defineEvent} does; the naming check flags a command named like a past event.
 */
export function defineCommand<const TType extends string, TSchema extends StandardSchemaV1>(
  type: TType,
  options: DefineOptions<TSchema>,
): CommandDefinition<TType, TSchema> {
  return define('command', type, options, checkCommandName(type));
}

/** True for an event or command definition from any installed copy of Tidings. */
export function isDefinition(value: unknown): value is MessageDefinition {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[definitionBrand] === true
  );
}
