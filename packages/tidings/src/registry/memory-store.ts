/** A {@link SchemaStore} in memory, for tests and for tools that check schemas without keeping them. */
import { defaultCompatibilityMode, type CompatibilityMode } from './modes.js';
import {
  promised,
  type Registration,
  type SchemaStore,
  type StoredSchema,
  type StoredVersion,
} from './store.js';

/** Creates an empty in-memory schema store. Everything is lost when the process ends. */
export function createMemorySchemaStore(): SchemaStore {
  const schemas = new Map<string, number>();
  const byId = new Map<number, string>();
  const subjects = new Map<string, StoredVersion[]>();
  const modes = new Map<string, CompatibilityMode>();
  const global = '';
  return {
    name: 'memory',
    register(subject, schema, admit): Promise<Registration> {
      return promised(() => {
        const history = subjects.get(subject) ?? [];
        const existing = history.find((version) => version.schema === schema);
        if (existing !== undefined) return { version: { ...existing }, created: false };
        admit({
          history: history.map((version) => ({ ...version })),
          mode: modes.get(subject) ?? modes.get(global) ?? defaultCompatibilityMode,
        });
        let id = schemas.get(schema);
        if (id === undefined) {
          id = schemas.size + 1;
          schemas.set(schema, id);
          byId.set(id, schema);
        }
        const version: StoredVersion = {
          subject,
          version: (history.at(-1)?.version ?? 0) + 1,
          id,
          schema,
          registeredAt: Date.now(),
        };
        subjects.set(subject, [...history, version]);
        return { version: { ...version }, created: true };
      });
    },
    subjects: () => promised(() => [...subjects.keys()].sort()),
    versions: (subject) => promised(() => (subjects.get(subject) ?? []).map((version) => ({ ...version }))),
    schemaById(id): Promise<StoredSchema | undefined> {
      return promised(() => {
        const schema = byId.get(id);
        return schema === undefined ? undefined : { id, schema };
      });
    },
    getMode: (subject) => promised(() => modes.get(subject ?? global)),
    setMode(mode, subject) {
      return promised(() => {
        modes.set(subject ?? global, mode);
      });
    },
    close: () => promised(() => undefined),
  };
}
