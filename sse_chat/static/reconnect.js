// The page's reconnection policy, the same as the CLI's (cli/ask.py: backoff_ms,
// StreamFollower.run). Pure functions, no DOM and no timers, so tests can import
// this module and check every number.
//
// WHATWG HTML, 9.2 "Server-sent events": the `retry:` field sets the event
// source's "reconnection time", the wait before reconnecting; when a previous
// attempt failed, user agents may add an exponential backoff delay on top of it.
// https://html.spec.whatwg.org/multipage/server-sent-events.html#reconnection-time

/** The reconnection time until the server sends `retry:`, milliseconds. */
export const DEFAULT_RETRY_MS = 1000;
/** Waits grow from the reconnection time up to this, milliseconds. */
export const MAX_BACKOFF_MS = 30000;
/** Consecutive failed reconnections after which the page gives up. */
export const MAX_RECONNECTIONS = 5;

/** Answers retried like a dropped connection: a proxy's bad gateway or time-out,
 *  or "unavailable, try again" (503 event_log_unavailable while Redis is away). */
const RETRIED_STATUSES = new Set([502, 503, 504]);
/** Error types of such answers that no retry changes (no upstream for the model). */
const PERMANENT_ERROR_TYPES = new Set(["backend_unavailable"]);
/** Error types retried whatever their status: 409 idempotency_key_in_use (the first
 *  request with this question's key is still starting its stream). */
const RETRIED_ERROR_TYPES = new Set(["idempotency_key_in_use"]);

/** The policy before the first connection: no failure yet. */
export const FIRST_CONNECTION = Object.freeze({ retryMs: DEFAULT_RETRY_MS, failures: 0 });

/**
 * Milliseconds to wait before reconnection attempt `failures` (1, 2, …): the
 * reconnection time doubled per consecutive failure, times 1 + jitter/2 (jitter
 * in [0, 1)), capped at MAX_BACKOFF_MS, never below the reconnection time.
 */
export function backoffMs(retryMs, failures, jitter) {
  const grown = retryMs * 2 ** Math.max(failures - 1, 0) * (1 + jitter / 2);
  return Math.max(retryMs, Math.min(MAX_BACKOFF_MS, grown));
}

/**
 * A Retry-After header given in seconds (RFC 9110, 10.2.3 "delay-seconds"), as
 * milliseconds capped at MAX_BACKOFF_MS; 0 when absent or not a number of
 * seconds (an HTTP date is not honoured).
 */
export function retryAfterMs(value) {
  if (!/^\s*[0-9]+(\.[0-9]+)?\s*$/.test(value ?? "")) return 0;
  return Math.min(Number(value) * 1000, MAX_BACKOFF_MS);
}

/** Whether an HTTP error answer counts as a dropped connection (to retry). */
export function isRetriedAnswer(status, errorType) {
  return (RETRIED_STATUSES.has(status) && !PERMANENT_ERROR_TYPES.has(errorType)) || RETRIED_ERROR_TYPES.has(errorType);
}

/**
 * The policy after a connection ended without the stream's last event.
 *
 * @param state `{retryMs, failures}`: FIRST_CONNECTION, or this function's last answer.
 * @param drop `{progressed, retryMs, leastWaitMs}`: whether that connection
 *   received at least one event, the `retry:` it carried (null when none) and
 *   the least wait the server asked for (Retry-After, milliseconds).
 * @param jitter a number in [0, 1).
 * @returns `{retryMs, failures, giveUp, waitMs}`: a connection that made progress
 *   counts as the first failure again; past MAX_RECONNECTIONS failed
 *   reconnections in a row, give up.
 */
export function nextReconnection(state, drop, jitter) {
  const retryMs = drop.retryMs ?? state.retryMs;
  const failures = drop.progressed ? 1 : state.failures + 1;
  if (failures > MAX_RECONNECTIONS) return { retryMs, failures, giveUp: true, waitMs: 0 };
  const waitMs = Math.max(backoffMs(retryMs, failures, jitter), drop.leastWaitMs || 0);
  return { retryMs, failures, giveUp: false, waitMs };
}
