/**
 * The schema registry's client API over a {@link SchemaStore}: register versions under the subject's compatibility
 * mode, check candidates, read subjects, versions and schemas, set modes, and guard a bus's publishes.
 */
import type { MessageDefinition } from '../core/define.js';
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { JsonSchema, JsonSchemaConverter } from '../core/json-schema.js';
import { checkCompatibility, formatViolation, type CompatibilityResult } from './compatibility.js';
import { canonicalJson } from './json-pointer.js';
import { defaultCompatibilityMode, parseCompatibilityMode, type CompatibilityMode } from './modes.js';
import type { SchemaStore, StoredVersion } from './store.js';

/** The largest schema document accepted, in bytes of canonical JSON (256 KiB). */
export const maxSchemaBytes = 256 * 1024;
/** The most versions one subject holds; registering more fails with `CONFLICT`. */
export const maxVersionsPerSubject = 1_000;
/** The longest subject name, in characters. */
export const maxSubjectLength = 255;

/** A registered version, with its document parsed. */
export interface RegisteredVersion {
  subject: string;
  version: number;
  id: number;
  schema: JsonSchema;
  registeredAt: number;
}

/** Options of {@link createSchemaRegistry}. */
export interface SchemaRegistryOptions {
  /** Where versions are kept: `createSqliteSchemaStore`, `createPostgresSchemaStore` or `createMemorySchemaStore`. */
  store: SchemaStore;
  /** Turns Standard Schemas that cannot produce JSON Schema themselves (e.g. valibot) into one, for definitions. */
  converter?: JsonSchemaConverter;
}

/** The registry client. Every method rejects with `CLOSED` after `close()`. */
export interface SchemaRegistry {
  readonly store: SchemaStore;
  /**
   * Registers `schema` as the next version of `subject`, after checking it against the history under the subject's
   * mode. Resolves with the existing version and `created: false` when the subject already holds the same document.
   * Rejects with `SCHEMA_INCOMPATIBLE` (details: `violations`, `mode`, `subject`) naming each field, rule and mode;
   * `INVALID_CONFIG` for a bad subject or a document over {@link maxSchemaBytes}; `CONFLICT` past
   * {@link maxVersionsPerSubject}.
   */
  register(subject: string, schema: JsonSchema): Promise<RegisteredVersion & { created: boolean }>;
  /** Registers a definition's JSON Schema under its type (the subject), as {@link register} does. */
  registerDefinition(definition: MessageDefinition): Promise<RegisteredVersion & { created: boolean }>;
  /**
   * Checks `schema` against `subject` without registering it: under the subject's mode, or against one version
   * (`against`, a number or `'latest'`) in the mode's directions. An unknown subject is compatible.
   */
  check(subject: string, schema: JsonSchema, against?: number | 'latest'): Promise<CompatibilityResult>;
  /** The version of `subject` holding exactly `schema`, if any. */
  lookup(subject: string, schema: JsonSchema): Promise<RegisteredVersion | undefined>;
  /** Every subject, sorted. */
  subjects(): Promise<string[]>;
  /** The subject's version numbers, ascending; rejects with `NOT_FOUND` for an unknown subject. */
  versions(subject: string): Promise<number[]>;
  /** One version (or the latest); rejects with `NOT_FOUND` when the subject or version does not exist. */
  getVersion(subject: string, version: number | 'latest'): Promise<RegisteredVersion>;
  /** A schema by its global id; rejects with `NOT_FOUND` for an unknown id. */
  getSchema(id: number): Promise<JsonSchema>;
  /** The mode in force: the subject's own, else the global one, else BACKWARD. Without `subject`, the global one. */
  getCompatibility(subject?: string): Promise<CompatibilityMode>;
  /** The subject's own mode (or the global one's setting), `undefined` when never set. */
  getCompatibilityConfig(subject?: string): Promise<CompatibilityMode | undefined>;
  /** Sets the subject's mode, or the global default without `subject`. */
  setCompatibility(mode: CompatibilityMode, subject?: string): Promise<void>;
  /**
   * What a bus calls before first publishing a definition (see `BusOptions.registry`): registers its schema once per
   * definition object and caches the outcome; a failure is not cached, so the next publish tries again. Rejects as
   * {@link register} does, with a message saying the event was not published.
   */
  ensureRegistered(definition: MessageDefinition): Promise<void>;
  /** Closes the store. */
  close(): Promise<void>;
}

/** Checks a subject name: 1 to 255 characters, no control characters. Throws `INVALID_CONFIG`. */
export function checkSubject(subject: unknown): string {
  if (
    typeof subject !== 'string' ||
    subject.length === 0 ||
    subject.length > maxSubjectLength ||
    // eslint-disable-next-line no-control-regex
    /[\u0000-\u001f\u007f]/.test(subject)
  ) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `subject ${JSON.stringify(subject)} must be 1 to ${maxSubjectLength} characters without control characters ` +
        `(Tidings uses the event type, e.g. "OrderPlaced")`,
    );
  }
  return subject;
}

/** Canonical text of a schema document, checked for shape and size. Throws `INVALID_CONFIG`. */
export function canonicalSchema(schema: unknown): string {
  if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
    if (typeof schema !== 'boolean') {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `a schema must be a JSON Schema object (e.g. { "type": "object", "properties": {...} }), got ${
          Array.isArray(schema) ? 'an array' : typeof schema
        }`,
      );
    }
  }
  const text = canonicalJson(schema);
  const bytes = Buffer.byteLength(text);
  if (bytes > maxSchemaBytes) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `the schema is ${bytes} bytes, over the limit of ${maxSchemaBytes}; split it or move shared parts to $defs`,
      { size: bytes, limit: maxSchemaBytes },
    );
  }
  return text;
}

const parsed = (version: StoredVersion): RegisteredVersion => ({
  subject: version.subject,
  version: version.version,
  id: version.id,
  schema: JSON.parse(version.schema) as JsonSchema,
  registeredAt: version.registeredAt,
});

/** The error for a refused registration: every violation on its own line after the first. */
export function incompatibleError(what: string, subject: string, result: CompatibilityResult): TidingsError {
  const lines = result.violations.map(formatViolation);
  return new TidingsError(
    ErrorCode.SCHEMA_INCOMPATIBLE,
    `${what}: the schema is incompatible with subject "${subject}" under ${result.mode} ` +
      `(${lines.length} problem${lines.length === 1 ? '' : 's'}): ${lines.join('; ')}. Make the change ` +
      `compatible (add optional fields or defaults, widen rather than narrow), or change the subject's mode ` +
      `deliberately.`,
    { subject, mode: result.mode, violations: result.violations, retryable: false },
  );
}

/** Creates a registry client over `options.store`. The store is closed by `close()`. */
export function createSchemaRegistry(options: SchemaRegistryOptions): SchemaRegistry {
  const { store, converter } = options;
  if (typeof store !== 'object' || store === null || typeof store.register !== 'function') {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      'createSchemaRegistry: "store" must be a SchemaStore (createSqliteSchemaStore, createPostgresSchemaStore, ...)',
    );
  }
  const ensured = new WeakMap<MessageDefinition, Promise<void>>();
  let closed = false;
  const open = () => {
    if (closed) throw new TidingsError(ErrorCode.CLOSED, 'the schema registry client is closed');
  };

  async function versionsOf(subject: string): Promise<StoredVersion[]> {
    return store.versions(checkSubject(subject));
  }

  /** The subject's versions; rejects with `NOT_FOUND` when it has none. */
  async function existingVersionsOf(subject: string): Promise<StoredVersion[]> {
    const history = await versionsOf(subject);
    if (history.length === 0) {
      throw new TidingsError(
        ErrorCode.NOT_FOUND,
        `subject "${subject}" has no versions; register one first`,
        {
          subject,
        },
      );
    }
    return history;
  }

  async function register(
    subject: string,
    schema: JsonSchema,
    what = `registering a version of "${subject}"`,
  ): Promise<RegisteredVersion & { created: boolean }> {
    open();
    checkSubject(subject);
    const text = canonicalSchema(schema);
    const candidate = JSON.parse(text) as JsonSchema;
    const registration = await store.register(subject, text, ({ history, mode }) => {
      if (history.length >= maxVersionsPerSubject) {
        throw new TidingsError(
          ErrorCode.CONFLICT,
          `${what}: subject "${subject}" already holds ${history.length} versions, the most allowed ` +
            `(${maxVersionsPerSubject}); start a new event type for further changes`,
          { subject, retryable: false },
        );
      }
      const result = checkCompatibility(
        candidate,
        history.map((version) => ({
          version: version.version,
          schema: JSON.parse(version.schema) as JsonSchema,
        })),
        mode,
      );
      if (!result.compatible) throw incompatibleError(what, subject, result);
    });
    return { ...parsed(registration.version), created: registration.created };
  }

  const registry: SchemaRegistry = {
    store,
    register: (subject, schema) => register(subject, schema),
    registerDefinition: (definition) =>
      register(
        definition.type,
        definition.jsonSchema(converter),
        `${definition.type} version ${definition.version}`,
      ),
    async check(subject, schema, against) {
      open();
      const history = await versionsOf(subject);
      const candidate = JSON.parse(canonicalSchema(schema)) as JsonSchema;
      const mode = await registry.getCompatibility(subject);
      let targets = history;
      if (against !== undefined) {
        const one = against === 'latest' ? history.at(-1) : history.find((v) => v.version === against);
        if (one === undefined) {
          throw new TidingsError(ErrorCode.NOT_FOUND, `subject "${subject}" has no version ${against}`, {
            subject,
          });
        }
        targets = [one];
      }
      return checkCompatibility(
        candidate,
        targets.map((version) => ({
          version: version.version,
          schema: JSON.parse(version.schema) as JsonSchema,
        })),
        against === undefined ? mode : (mode.replace('_TRANSITIVE', '') as CompatibilityMode),
      );
    },
    async lookup(subject, schema) {
      open();
      const text = canonicalSchema(schema);
      const found = (await versionsOf(subject)).find((version) => version.schema === text);
      return found === undefined ? undefined : parsed(found);
    },
    async subjects() {
      open();
      return store.subjects();
    },
    async versions(subject) {
      open();
      const history = await existingVersionsOf(subject);
      return history.map((version) => version.version);
    },
    async getVersion(subject, version) {
      open();
      const history = await existingVersionsOf(subject);
      const found = version === 'latest' ? history.at(-1) : history.find((v) => v.version === version);
      if (found === undefined) {
        throw new TidingsError(
          ErrorCode.NOT_FOUND,
          `subject "${subject}" has no version ${version}; it has versions 1 to ${history.at(-1)?.version ?? 0}`,
          { subject, version },
        );
      }
      return parsed(found);
    },
    async getSchema(id) {
      open();
      const found = await store.schemaById(id);
      if (found === undefined) throw new TidingsError(ErrorCode.NOT_FOUND, `no schema has id ${id}`, { id });
      return JSON.parse(found.schema) as JsonSchema;
    },
    async getCompatibility(subject) {
      open();
      const own = subject === undefined ? undefined : await store.getMode(checkSubject(subject));
      return own ?? (await store.getMode()) ?? defaultCompatibilityMode;
    },
    async getCompatibilityConfig(subject) {
      open();
      return store.getMode(subject === undefined ? undefined : checkSubject(subject));
    },
    async setCompatibility(mode, subject) {
      open();
      await store.setMode(
        parseCompatibilityMode(mode),
        subject === undefined ? undefined : checkSubject(subject),
      );
    },
    ensureRegistered(definition) {
      let pending = ensured.get(definition);
      if (pending === undefined) {
        const what = `${definition.type} version ${definition.version} was not ${definition.kind === 'event' ? 'published' : 'sent'}`;
        pending = (async () => {
          await register(definition.type, definition.jsonSchema(converter), what);
        })();
        pending.catch(() => ensured.delete(definition));
        ensured.set(definition, pending);
      }
      return pending;
    },
    async close() {
      if (closed) return;
      closed = true;
      await store.close();
    },
  };
  return registry;
}
