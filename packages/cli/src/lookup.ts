/**
 * Looking up what a command names (a topic, a group, a store) and failing with one line that says what exists
 * and which command lists it, with a "did you mean" when a name is close to an existing one.
 */
import type { GroupDescription, TopicDescription, Transport } from 'tidings';
import { isTidingsError } from 'tidings';
import { CliError } from './errors.js';

/** The durable stores a transport may keep (not exported by name from `tidings`). */
export type TransportStores = NonNullable<Transport['stores']>;

/** Edit distance between two short names (Levenshtein), for suggestions. */
function distance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current.push(Math.min((previous[j] ?? 0) + 1, (current[j - 1] ?? 0) + 1, substitution));
    }
    previous = current;
  }
  return previous[b.length] ?? 0;
}

/** The closest of `names` to `name`, if it is close enough to be a likely typo. */
export function closest(name: string, names: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const candidate of names) {
    const d = distance(name.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

const didYouMean = (name: string, names: readonly string[]) => {
  const suggestion = closest(name, names);
  return suggestion === undefined ? '' : `did you mean "${suggestion}"? `;
};

/** The description of `topic`; a one-line error naming the data directory if it does not exist. */
export async function requireTopic(
  transport: Transport,
  topic: string,
  dataDir: string,
): Promise<TopicDescription> {
  const topics = await transport.admin.listTopics();
  if (!topics.includes(topic)) {
    throw new CliError(
      `unknown topic "${topic}" in ${dataDir}; ${didYouMean(topic, topics)}` +
        `list topics with 'tidings topics list', or create it with 'tidings topics create ${topic}'`,
    );
  }
  return transport.admin.describeTopic(topic);
}

/** The description of `group`; a one-line error if no such group ever consumed from this data directory. */
export async function requireGroup(
  transport: Transport,
  group: string,
  dataDir: string,
): Promise<GroupDescription> {
  try {
    return await transport.admin.describeGroup(group);
  } catch (error) {
    if (!isTidingsError(error, 'NOT_FOUND')) throw error;
    const groups = await transport.admin.listGroups();
    throw new CliError(
      `unknown consumer group "${group}" in ${dataDir}; ${didYouMean(group, groups)}` +
        `list groups with 'tidings groups list'`,
      { cause: error },
    );
  }
}

/** A store the transport must keep for the operator commands (parking, operator requests). */
export function requireStore<K extends 'parking' | 'inbox' | 'requests'>(
  transport: Transport,
  store: K,
): NonNullable<TransportStores[K]> {
  const found = transport.stores?.[store];
  if (found === undefined) {
    throw new CliError(
      `the "${transport.name}" transport keeps no ${store} store, so this command cannot reach its consumers; ` +
        'use a data directory of the embedded log',
    );
  }
  return found;
}

/**
 * Every group of the transport with its description, skipping a group that disappeared between listing and
 * describing it.
 */
export async function* describeGroups(
  transport: Transport,
): AsyncGenerator<{ group: string; description: GroupDescription }> {
  for (const group of await transport.admin.listGroups()) {
    let description: GroupDescription;
    try {
      description = await transport.admin.describeGroup(group);
    } catch (error) {
      if (isTidingsError(error, 'NOT_FOUND')) continue;
      throw error;
    }
    yield { group, description };
  }
}
