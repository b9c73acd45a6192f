/**
 * Request headers kept as parsed pairs (`fieldsHeaders`): every read answers as a `Headers`
 * filled from the same lines would, the pairs are handed out only while nothing filled them,
 * and forwarding them upstream gives the same fields as forwarding a real `Headers`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { upstreamRequestHeaders } from "../../src/proxy/headers.ts";
import { fieldsHeaders, headerFieldsOf } from "../../src/server/fields_headers.ts";

const FIELDS: [string, string][] = [
  ["Host", "gw.example:8080"],
  ["Accept", "text/html"],
  ["accept", "application/json"],
  ["Connection", "keep-alive, X-Hop"],
  ["X-Hop", "dropped"],
  ["X-Forwarded-For", "203.0.113.7"],
  ["Via", "1.0 edge"],
  ["Set-Cookie", "a=1"],
  ["set-cookie", "b=2"],
  ["Cookie", "c=3"],
  ["X-Obs", "caf\xe9"],
];

Deno.test("fieldsHeaders: get and has answer as a filled Headers, without filling", () => {
  const lazy = fieldsHeaders(FIELDS);
  const real = new Headers(FIELDS);
  for (
    const name of ["host", "HOST", "accept", "set-cookie", "x-obs", "connection", "missing"]
  ) {
    assert.equal(lazy.get(name), real.get(name), name);
    assert.equal(lazy.has(name), real.has(name), name);
  }
  assert.equal(headerFieldsOf(lazy), FIELDS, "still the parsed pairs");
});

Deno.test("fieldsHeaders: an invalid name throws as Headers does", () => {
  const lazy = fieldsHeaders(FIELDS);
  assert.throws(() => lazy.get("bad name"), TypeError);
  assert.throws(() => new Headers(FIELDS).get("bad name"), TypeError);
});

Deno.test("fieldsHeaders: iteration, writes and copies fill it once, in field order", () => {
  const real = new Headers(FIELDS);
  const iterated = fieldsHeaders(FIELDS);
  assert.deepEqual([...iterated], [...real]);
  assert.equal(headerFieldsOf(iterated), null, "filled: the Headers are the truth now");
  assert.deepEqual([...iterated.entries()], [...real.entries()]);
  assert.deepEqual(fieldsHeaders(FIELDS).getSetCookie(), real.getSetCookie());
  assert.deepEqual([...new Headers(fieldsHeaders(FIELDS))], [...real]);
  const seen: string[] = [];
  fieldsHeaders(FIELDS).forEach((value, name) => seen.push(`${name}=${value}`));
  const expected: string[] = [];
  real.forEach((value, name) => expected.push(`${name}=${value}`));
  assert.deepEqual(seen, expected);

  const written = fieldsHeaders(FIELDS);
  written.set("accept", "*/*");
  written.append("x-new", "1");
  written.delete("cookie");
  assert.equal(written.get("accept"), "*/*");
  assert.equal(written.get("x-new"), "1");
  assert.equal(written.has("cookie"), false);
  assert.equal(written.get("host"), "gw.example:8080");
  assert.equal(headerFieldsOf(written), null);
  assert.equal(headerFieldsOf(new Headers(FIELDS)), null, "a plain Headers has no pairs");
});

Deno.test("upstreamRequestHeaders: the pairs forward exactly as the filled Headers do", () => {
  const context = {
    clientIp: "198.51.100.2",
    proto: "https",
    host: "gw.example:8080",
    requestId: "req-1",
  };
  const fromPairs = upstreamRequestHeaders(fieldsHeaders(FIELDS), context);
  const fromHeaders = upstreamRequestHeaders(new Headers(FIELDS), context);
  assert.deepEqual(fromPairs, fromHeaders);
  const names = fromPairs.map(([name]) => name);
  assert.ok(!names.includes("x-hop") && !names.includes("connection") && !names.includes("host"));
  assert.ok(fromPairs.some(([name, value]) => name === "accept" && value.includes(", ")));
});
