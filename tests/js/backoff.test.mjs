// Reconnection delays: full jitter with a cap, and Retry-After.
import assert from "node:assert/strict";
import { test } from "node:test";

import { backoffDelay, retryAfterMs } from "../../sse_gateway/static/connectome-stream/connectome-stream.js";

test("backoff: full jitter below base * 2^attempt", () => {
  assert.equal(backoffDelay(0, 1000, 30000, () => 0.999999) < 1000, true);
  assert.equal(backoffDelay(0, 1000, 30000, () => 0), 0);
  assert.equal(backoffDelay(3, 1000, 30000, () => 0.5), 4000);
});

test("backoff: capped", () => {
  assert.equal(backoffDelay(10, 1000, 30000, () => 1), 30000);
  assert.equal(backoffDelay(1e6, 1000, 30000, () => 1), 30000); // no overflow to Infinity/NaN
});

test("backoff: spread over the whole range", () => {
  const draws = Array.from({ length: 2000 }, () => backoffDelay(2, 1000, 30000));
  assert.ok(Math.min(...draws) >= 0 && Math.max(...draws) < 4000);
  assert.ok(Math.min(...draws) < 400 && Math.max(...draws) > 3600, "not full jitter");
});

test("Retry-After: seconds", () => {
  assert.equal(retryAfterMs("3"), 3000);
  assert.equal(retryAfterMs(" 0 "), 0);
});

test("Retry-After: an HTTP date", () => {
  const now = Date.parse("Wed, 21 Oct 2015 07:28:00 GMT");
  assert.equal(retryAfterMs("Wed, 21 Oct 2015 07:28:05 GMT", now), 5000);
  assert.equal(retryAfterMs("Wed, 21 Oct 2015 07:27:00 GMT", now), 0); // past: at once
});

test("Retry-After: absent or garbage is null, huge is capped", () => {
  assert.equal(retryAfterMs(null), null);
  assert.equal(retryAfterMs(undefined), null);
  assert.equal(retryAfterMs("soon"), null);
  assert.equal(retryAfterMs("-3"), null);
  assert.equal(retryAfterMs("999999999"), 600000);
});
