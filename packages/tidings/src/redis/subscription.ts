/** The {@link Subscription} object of the Redis transport: one `for await` loop over a group member's deliveries. */
import type { Delivery, Subscription } from '../core/transport.js';
import type { Member } from './member.js';
import { iterateOnce } from '../core/subscription-iterator.js';

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

  /** The deliveries, for one `for await` loop (see {@link iterateOnce}). */
  [Symbol.asyncIterator](): AsyncIterator<Delivery, undefined> {
    const iterator = iterateOnce(this, this.iterated, () => this.member.next());
    this.iterated = true;
    return iterator;
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
