/**
 * The schema registry's routes under `/registry`: the Confluent Schema Registry REST API subset for JSON Schema
 * (subjects, versions, schemas by id, compatibility config per subject and global, compatibility checks), so that
 * Confluent clients and tools work against `tidings serve`. The registry lives in the data directory's
 * `registry.db`, or in PostgreSQL with `--registry-database-url`.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { ErrorCode, isTidingsError, type JsonSchema } from 'tidings';
import {
  createPostgresSchemaStore,
  createSchemaRegistry,
  createSqliteSchemaStore,
  formatViolation,
  isCompatibilityMode,
  type CompatibilityMode,
  type RegisteredVersion,
  type SchemaRegistry,
} from 'tidings/registry';
import type { ServeContext } from './context.js';
import {
  ConfluentError,
  notFound,
  RegistryHttpError,
  toHttpError,
  unprocessable,
} from './confluent-errors.js';

/** The media type Confluent clients send and receive. */
export const registryContentType = 'application/vnd.schemaregistry.v1+json';

/** The base path of the registry routes. */
export const registryPrefix = '/registry';

interface SubjectParams {
  subject: string;
}
interface VersionParams extends SubjectParams {
  version: string;
}

/** Opens the registry the options choose. */
async function openRegistry(context: ServeContext): Promise<SchemaRegistry> {
  const store =
    context.registryDatabaseUrl === undefined
      ? createSqliteSchemaStore({ dataDir: context.common.dataDir })
      : await createPostgresSchemaStore({
          url: context.registryDatabaseUrl,
          ...(context.registryDatabaseSchema === undefined ? {} : { schema: context.registryDatabaseSchema }),
        });
  return createSchemaRegistry({ store });
}

/** The JSON Schema document of a registration or lookup body; 422 when it is not one. */
function schemaOf(body: unknown): JsonSchema {
  if (typeof body !== 'object' || body === null) {
    throw unprocessable(ConfluentError.INVALID_SCHEMA, 'the body must be a JSON object with "schema"');
  }
  const { schema, schemaType, references } = body as {
    schema?: unknown;
    schemaType?: unknown;
    references?: unknown;
  };
  if (schemaType !== undefined && schemaType !== null && schemaType !== 'JSON') {
    throw unprocessable(
      ConfluentError.INVALID_SCHEMA,
      `schemaType ${JSON.stringify(schemaType)} is not supported: this registry holds JSON Schema only (schemaType "JSON")`,
    );
  }
  if (Array.isArray(references) && references.length > 0) {
    throw unprocessable(
      ConfluentError.INVALID_SCHEMA,
      'schema references are not supported; inline them with $defs',
    );
  }
  if (typeof schema !== 'string') {
    throw unprocessable(
      ConfluentError.INVALID_SCHEMA,
      '"schema" must be the JSON Schema document as a string',
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(schema);
  } catch (error) {
    throw unprocessable(
      ConfluentError.INVALID_SCHEMA,
      `"schema" is not valid JSON: ${(error as Error).message}`,
    );
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw unprocessable(ConfluentError.INVALID_SCHEMA, '"schema" must be a JSON Schema object');
  }
  return parsed as JsonSchema;
}

/** A version number or `latest` (also `-1`); 422 42202 otherwise. */
function versionOf(text: string): number | 'latest' {
  if (text === 'latest' || text === '-1') return 'latest';
  if (/^[1-9][0-9]{0,9}$/.test(text) && Number(text) <= 2 ** 31 - 1) return Number(text);
  throw unprocessable(
    ConfluentError.INVALID_VERSION,
    `version ${JSON.stringify(text)} must be a positive integer or "latest"`,
  );
}

const versionBody = (version: RegisteredVersion) => ({
  subject: version.subject,
  id: version.id,
  version: version.version,
  schemaType: 'JSON',
  schema: JSON.stringify(version.schema),
});

/** Throws 404 40401 for a subject with no versions. */
async function requireSubject(registry: SchemaRegistry, subject: string): Promise<void> {
  if (!(await registry.subjects()).includes(subject))
    throw notFound(ConfluentError.SUBJECT_NOT_FOUND, `Subject '${subject}' not found.`);
}

async function versionOrThrow(
  registry: SchemaRegistry,
  subject: string,
  text: string,
): Promise<RegisteredVersion> {
  const version = versionOf(text);
  await requireSubject(registry, subject);
  try {
    return await registry.getVersion(subject, version);
  } catch {
    throw notFound(ConfluentError.VERSION_NOT_FOUND, `Version ${text} not found.`);
  }
}

function compatibilityOf(body: unknown): CompatibilityMode {
  const value = (body as { compatibility?: unknown } | null)?.compatibility;
  const upper = typeof value === 'string' ? value.toUpperCase() : value;
  if (!isCompatibilityMode(upper)) {
    throw unprocessable(
      ConfluentError.INVALID_COMPATIBILITY_LEVEL,
      `Invalid compatibility level ${JSON.stringify(value)}: use one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, ` +
        'FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE',
    );
  }
  return upper;
}

/** Adds the registry routes to `app` under `/registry`. Resolves with a function that closes the registry. */
export async function registerRegistryRoutes(
  app: FastifyInstance,
  context: ServeContext,
): Promise<() => Promise<void>> {
  const registry = await openRegistry(context);

  await app.register(
    (scope) => {
      scope.addContentTypeParser(
        /^application\/vnd\.schemaregistry(\.v1)?\+json/,
        { parseAs: 'string' },
        (_request, body, done) => {
          try {
            done(null, body === '' ? {} : (JSON.parse(body as string) as unknown));
          } catch (error) {
            done(
              unprocessable(
                ConfluentError.INVALID_SCHEMA,
                `the body is not JSON: ${(error as Error).message}`,
              ),
              undefined,
            );
          }
        },
      );
      scope.addHook('onSend', (_request, reply, payload, done) => {
        void reply.header('content-type', registryContentType);
        done(null, payload);
      });
      scope.setErrorHandler((error, _request, reply) => {
        const failure =
          (error as { statusCode?: number }).statusCode === 413
            ? new RegistryHttpError(413, 41301, 'the request body is over the limit of 1 MiB')
            : (error as { code?: string }).code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
              ? new RegistryHttpError(415, 41501, `send ${registryContentType} or application/json`)
              : (error as { code?: string }).code === 'FST_ERR_CTP_INVALID_JSON_BODY' ||
                  (error as { code?: string }).code === 'FST_ERR_CTP_EMPTY_JSON_BODY'
                ? unprocessable(ConfluentError.INVALID_SCHEMA, 'the body is not valid JSON')
                : toHttpError(error);
        return reply.status(failure.status).send({ error_code: failure.errorCode, message: failure.message });
      });

      scope.get('/subjects', async () => registry.subjects());

      scope.get<{ Params: SubjectParams }>('/subjects/:subject/versions', async (request) => {
        await requireSubject(registry, request.params.subject);
        return registry.versions(request.params.subject);
      });

      scope.get<{ Params: VersionParams }>('/subjects/:subject/versions/:version', async (request) =>
        versionBody(await versionOrThrow(registry, request.params.subject, request.params.version)),
      );

      scope.get<{ Params: VersionParams }>(
        '/subjects/:subject/versions/:version/schema',
        async (request) =>
          (await versionOrThrow(registry, request.params.subject, request.params.version)).schema,
      );

      scope.post<{ Params: SubjectParams }>('/subjects/:subject/versions', async (request) => {
        const registered = await registry.register(request.params.subject, schemaOf(request.body));
        return { id: registered.id };
      });

      scope.post<{ Params: SubjectParams }>('/subjects/:subject', async (request) => {
        const schema = schemaOf(request.body);
        await requireSubject(registry, request.params.subject);
        const found = await registry.lookup(request.params.subject, schema);
        if (found === undefined) throw notFound(ConfluentError.SCHEMA_NOT_FOUND, 'Schema not found');
        return versionBody(found);
      });

      scope.get<{ Params: { id: string } }>('/schemas/ids/:id', async (request) => {
        const id = Number(request.params.id);
        if (!Number.isSafeInteger(id) || id < 1)
          throw notFound(ConfluentError.SCHEMA_NOT_FOUND, `Schema ${request.params.id} not found`);
        try {
          return { schemaType: 'JSON', schema: JSON.stringify(await registry.getSchema(id)) };
        } catch (error) {
          // Only an unknown id is a 404; a store that failed is reported as what it is.
          if (isTidingsError(error, ErrorCode.NOT_FOUND))
            throw notFound(ConfluentError.SCHEMA_NOT_FOUND, `Schema ${id} not found`);
          throw error;
        }
      });

      scope.get('/config', async () => ({ compatibilityLevel: await registry.getCompatibility() }));
      scope.put('/config', async (request) => {
        const compatibility = compatibilityOf(request.body);
        await registry.setCompatibility(compatibility);
        return { compatibility };
      });

      scope.get<{ Params: SubjectParams; Querystring: { defaultToGlobal?: string } }>(
        '/config/:subject',
        async (request) => {
          const own = await registry.getCompatibilityConfig(request.params.subject);
          if (own !== undefined) return { compatibilityLevel: own };
          if (request.query.defaultToGlobal === 'true')
            return { compatibilityLevel: await registry.getCompatibility() };
          throw notFound(
            ConfluentError.SUBJECT_COMPATIBILITY_NOT_CONFIGURED,
            `Subject '${request.params.subject}' does not have subject-level compatibility configured`,
          );
        },
      );
      scope.put<{ Params: SubjectParams }>('/config/:subject', async (request) => {
        const compatibility = compatibilityOf(request.body);
        await registry.setCompatibility(compatibility, request.params.subject);
        return { compatibility };
      });

      scope.post<{ Params: VersionParams }>(
        '/compatibility/subjects/:subject/versions/:version',
        async (request, reply: FastifyReply) => {
          const schema = schemaOf(request.body);
          const target = await versionOrThrow(registry, request.params.subject, request.params.version);
          const result = await registry.check(request.params.subject, schema, target.version);
          void reply.status(200);
          return result.compatible
            ? { is_compatible: true }
            : { is_compatible: false, messages: result.violations.map(formatViolation) };
        },
      );
      return Promise.resolve();
    },
    { prefix: registryPrefix },
  );

  return () => registry.close();
}
