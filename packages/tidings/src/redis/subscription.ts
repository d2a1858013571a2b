/** The {@link Subscription} object of the Redis transport: one `for await` loop over a group member's deliveries. */
import { ErrorCode, TidingsError } from '../core/errors.js';
import type { Delivery, Subscription } from '../core/transport.js';
import type { Member } from './member.js';

/** A {@link Subscription} of the Redis transport; `memberId` matches the member in `admin.describeGroup`. */
export interface RedisSubscription extends Subscription, AsyncDisposable {
  /** This member's id in its group: also its consumer name in the Redis consumer groups. */
  readonly memberId: string;
}

export class RedisSubscriptionImpl implements RedisSubscription {
  readonly group: string;
  readonly memberId: string;
  readonly closed: Promise<Error | undefined>;
  /** Internal: the group member behind it. */
  readonly member: Member;
  private iterated = false;

  constructor(member: Member) {
    this.member = member;
    this.group = member.group;
    this.memberId = member.id;
    this.closed = member.closed;
  }

  /**
   * The deliveries, for one `for await` loop. Leaving the loop early (`break`, `return`, a throw) closes the
   * subscription, since it cannot be iterated again.
   */
  [Symbol.asyncIterator](): AsyncIterator<Delivery, undefined> {
    if (this.iterated) {
      throw new TidingsError(
        ErrorCode.INVALID_CONFIG,
        `Subscription ${this.memberId} of group '${this.group}' is already being iterated; a subscription can be ` +
          `iterated once. Subscribe again for a second consumer.`,
        { group: this.group },
      );
    }
    this.iterated = true;
    return {
      next: () => this.member.next(),
      return: async () => {
        await this.close();
        return { done: true, value: undefined };
      },
    };
  }

  assignments(): ReadonlyArray<{ topic: string; partition: number }> {
    return this.member.assignments();
  }

  close(): Promise<void> {
    return this.member.close(undefined);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
