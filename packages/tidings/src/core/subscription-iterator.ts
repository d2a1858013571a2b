import { ErrorCode, TidingsError } from './errors.js';
import type { Delivery, Subscription } from './transport.js';

/**
 * The iterator of a subscription, which one `for await` loop may use: leaving the loop early (`break`, `return`, a
 * throw) closes the subscription, since it cannot be iterated again. `next` hands out the next delivery, or done
 * once the subscription closed.
 *
 * Throws `INVALID_CONFIG` when `alreadyIterated` is true: every transport refuses a second iteration the same way.
 */
export function iterateOnce(
  subscription: Pick<Subscription, 'group' | 'memberId' | 'close'>,
  alreadyIterated: boolean,
  next: () => Promise<IteratorResult<Delivery, undefined>>,
): AsyncIterator<Delivery, undefined> {
  if (alreadyIterated) {
    throw new TidingsError(
      ErrorCode.INVALID_CONFIG,
      `Subscription ${subscription.memberId} of group '${subscription.group}' is already being iterated; a ` +
        `subscription can be iterated once. Subscribe again for a second consumer.`,
      { group: subscription.group },
    );
  }
  return {
    next,
    return: async () => {
      await subscription.close();
      return { done: true, value: undefined };
    },
  };
}
