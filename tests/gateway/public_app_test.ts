/**
 * The public app on the gateway's own server: the request path is reached without Hono's
 * dispatch, yet Hono's routes (`/healthz`, `/readyz`, and what Hono decodes into them) answer
 * as before, and every answer carries a request id.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startTestGateway } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll } from "../_helpers/wait.ts";

const UUID_SHAPE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

Deno.test("public app: healthz and readyz by Hono, other paths forwarded, ids on every answer", async () => {
  const upstream = startUpstream((request) =>
    new Response(`${request.method} ${new URL(request.url).pathname}`)
  );
  const gw = await startTestGateway({
    services: { s: { prefix: "/", upstreams: [upstream.origin] } },
  });
  try {
    const get = async (path: string, init: RequestInit = {}) => {
      const response = await fetch(`${gw.url}${path}`, bounded(init));
      return { response, body: await response.text() };
    };
    const health = await get("/healthz?probe=1");
    assert.equal(health.response.status, 200);
    assert.deepEqual(JSON.parse(health.body), { status: "ok" });
    assert.match(health.response.headers.get("x-request-id")!, UUID_SHAPE);
    // Hono decodes the path before routing: still its route, as before.
    const encoded = await get("/%68ealthz");
    assert.deepEqual(JSON.parse(encoded.body), { status: "ok" });
    assert.equal((await get("/readyz")).response.status, 200);
    // Not Hono's routes: forwarded (a POST to /healthz, a trailing slash, anything else).
    assert.equal((await get("/healthz", { method: "POST" })).body, "POST /healthz");
    assert.equal((await get("/healthz/")).body, "GET /healthz/");
    const forwarded = await get("/a", { headers: { "x-request-id": "kept-1" } });
    assert.equal(forwarded.body, "GET /a");
    assert.equal(forwarded.response.headers.get("x-request-id"), "kept-1");
    const generated = await get("/a");
    assert.match(generated.response.headers.get("x-request-id")!, UUID_SHAPE);
  } finally {
    await closeAll({ gw, upstream });
  }
});
