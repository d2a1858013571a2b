/**
 * The naming check. Events are facts, named for the business in the past tense (`OrderPlaced`); commands are
 * requests in the imperative (`PlaceOrder`). Names like `PlaceOrder` for an event, `InsertOrderRow` (a table
 * operation rather than a business fact) or `OrderPlaced` for a command usually mean the model is off.
 *
 * The check is a heuristic over the words of the name; it reports, it never blocks unless asked to
 * (`naming: 'error'`), and it can be switched off per definition (`naming: 'off'`).
 */

/** What `defineEvent` / `defineCommand` do with a naming finding. */
export type NamingMode = 'warn' | 'error' | 'off';

/** Past-tense forms that do not end in -ed. */
const irregularPast = new Set([
  'sent',
  'paid',
  'shipped',
  'made',
  'done',
  'built',
  'bought',
  'sold',
  'won',
  'lost',
  'held',
  'kept',
  'left',
  'met',
  'put',
  'read',
  'set',
  'shut',
  'split',
  'spent',
  'taken',
  'given',
  'written',
  'begun',
  'broken',
  'chosen',
  'drawn',
  'driven',
  'eaten',
  'fallen',
  'forgotten',
  'frozen',
  'gotten',
  'got',
  'hidden',
  'known',
  'ridden',
  'risen',
  'seen',
  'shaken',
  'shown',
  'spoken',
  'stolen',
  'sworn',
  'thrown',
  'withdrawn',
  'woken',
  'found',
  'bound',
  'told',
  'brought',
  'caught',
  'taught',
  'thought',
  'sought',
  'fought',
  'laid',
  'said',
  'led',
  'fed',
  'fled',
  'run',
  'come',
  'become',
  'overcome',
  'cut',
  'hit',
  'let',
  'quit',
  'bid',
  'rebuilt',
  'resent',
  'reset',
  'undone',
]);

/** Words that describe storage operations rather than business facts. */
const crudWords = new Set([
  'insert',
  'inserted',
  'update',
  'updated',
  'upsert',
  'upserted',
  'delete',
  'deleted',
  'row',
  'rows',
  'table',
  'crud',
  'modified',
  'changed',
  'saved',
]);

/** Splits `OrderPlaced`, `order_placed`, `order.placed` or `ORDER-PLACED` into lower-case words. */
export function nameWords(name: string): string[] {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1 $2')
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((word) => word.toLowerCase());
}

function isPastTense(word: string): boolean {
  return irregularPast.has(word) || (word.length > 3 && word.endsWith('ed') && !word.endsWith('need'));
}

/**
 * Findings for an event type name; an empty array when the name reads as a business fact in the past tense.
 * Only the last segment of a dotted name is judged (`shop.orders.OrderPlaced` reads as `OrderPlaced`).
 */
export function checkEventName(type: string): string[] {
  const words = nameWords(type.split('.').at(-1) ?? type);
  const findings: string[] = [];
  const last = words.at(-1);
  if (last === undefined)
    return [`event type "${type}" has no words; name it for a business fact, e.g. OrderPlaced`];
  const crud = words.filter((word) => crudWords.has(word));
  if (crud.length > 0) {
    findings.push(
      `event "${type}" is named like a table operation (${crud.join(', ')}); name the business fact instead, ` +
        `e.g. AddressCorrected rather than CustomerUpdated`,
    );
  }
  if (!isPastTense(last)) {
    findings.push(
      `event "${type}" does not end in a past-tense verb; events are facts that happened, e.g. OrderPlaced rather ` +
        `than PlaceOrder (if this is a request with one handler, use defineCommand)`,
    );
  }
  return findings;
}

/** Findings for a command type name; an empty array when it reads as an imperative request. */
export function checkCommandName(type: string): string[] {
  const words = nameWords(type.split('.').at(-1) ?? type);
  const last = words.at(-1);
  const first = words[0];
  if (last === undefined || first === undefined)
    return [`command type "${type}" has no words; e.g. PlaceOrder`];
  if (isPastTense(last) && !isPastTense(first)) {
    return [
      `command "${type}" is named like a past event; commands are requests in the imperative, e.g. PlaceOrder ` +
        `rather than OrderPlaced (if this is a fact that happened, use defineEvent)`,
    ];
  }
  return [];
}
