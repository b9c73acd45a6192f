/**
 * Request ids: the client's kept when valid, else generated UUID-shaped ids that stay unique
 * across the blocks of the counter.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  REQUEST_ID_MAX_LENGTH,
  requestIdGenerator,
  validRequestId,
} from "../../src/gateway/request_id.ts";

const UUID_SHAPE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

Deno.test("validRequestId keeps word characters, '-' and '=' up to the length limit", () => {
  assert.equal(validRequestId("client-id_123=="), "client-id_123==");
  assert.equal(
    validRequestId("a".repeat(REQUEST_ID_MAX_LENGTH)),
    "a".repeat(REQUEST_ID_MAX_LENGTH),
  );
  assert.equal(validRequestId("a".repeat(REQUEST_ID_MAX_LENGTH + 1)), null);
  assert.equal(validRequestId("bad id; drop"), null);
  assert.equal(validRequestId("a, b"), null); // a repeated header, joined
  assert.equal(validRequestId(""), null);
  assert.equal(validRequestId(null), null);
});

Deno.test("requestIdGenerator: UUID-shaped, unique across blocks, fresh random part per block", () => {
  let draws = 0;
  const next = requestIdGenerator((bytes) => {
    draws++;
    crypto.getRandomValues(bytes);
  });
  const seen = new Set<string>();
  const count = 0x10000 * 2 + 5;
  for (let i = 0; i < count; i++) {
    const id = next();
    if (i % 4099 === 0) assert.match(id, UUID_SHAPE);
    seen.add(id);
  }
  assert.equal(seen.size, count);
  assert.equal(draws, 3); // one random draw per block of 2^16 ids
  const prefixes = new Set([...seen].map((id) => id.slice(0, 24)));
  assert.equal(prefixes.size, 3);
});

Deno.test("requestIdGenerator: two generators (two processes) do not collide", () => {
  const a = requestIdGenerator();
  const b = requestIdGenerator();
  const ids = new Set<string>();
  for (let i = 0; i < 1000; i++) {
    ids.add(a());
    ids.add(b());
  }
  assert.equal(ids.size, 2000);
});
