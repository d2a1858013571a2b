/**
 * Classifying errors of the NATS client: which mean "the server is not reachable (now)", which mean "not found",
 * which mean "a compare-and-set lost".
 */
import { JetStreamApiCodes, JetStreamApiError, JetStreamError } from '@nats-io/jetstream';
import { errors } from '@nats-io/transport-node';
import { isTidingsError } from '../core/errors.js';

/** JetStream API error code of "stream name already in use with a different configuration". */
const streamNameExist = 10058;
/** JetStream API error code of "consumer already exists" (with another configuration). */
const consumerExists = 10105;
const consumerNameExist = 10013;

function apiCode(error: unknown): number | undefined {
  return error instanceof JetStreamApiError ? error.code : undefined;
}

/** The server could not be reached or did not answer in time: retrying later may help. */
export function isConnectionFailure(error: unknown): boolean {
  if (isTidingsError(error)) return error.code === 'TRANSPORT_UNAVAILABLE';
  if (
    error instanceof errors.TimeoutError ||
    error instanceof errors.ConnectionError ||
    error instanceof errors.ClosedConnectionError ||
    error instanceof errors.NoRespondersError ||
    error instanceof errors.RequestError
  ) {
    return true;
  }
  // "jetstream is not enabled" is what a publish gets while a restarted server is still recovering its streams;
  // 503 "JetStream system temporarily unavailable" the same from the API.
  if (error instanceof JetStreamApiError) return error.status === 503;
  if (error instanceof Error && error.name === 'JetStreamNotEnabled') return true;
  return error instanceof JetStreamError && /not enabled|no responders|timeout/i.test(error.message);
}

export function isStreamNotFound(error: unknown): boolean {
  return apiCode(error) === JetStreamApiCodes.StreamNotFound;
}

export function isConsumerNotFound(error: unknown): boolean {
  return apiCode(error) === JetStreamApiCodes.ConsumerNotFound;
}

export function isStreamExists(error: unknown): boolean {
  return apiCode(error) === streamNameExist;
}

export function isConsumerExists(error: unknown): boolean {
  const code = apiCode(error);
  return code === consumerExists || code === consumerNameExist;
}

/** A publish with an expected last subject sequence lost the compare-and-set. */
export function isWrongLastSequence(error: unknown): boolean {
  const code = apiCode(error);
  return (
    code === JetStreamApiCodes.StreamWrongLastSequence ||
    code === JetStreamApiCodes.StreamWrongLastSequenceUnknown
  );
}
