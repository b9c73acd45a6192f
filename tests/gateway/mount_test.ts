/**
 * The gateway mounted in a user's Hono app (`app.route("/gw", gateway.app)`) routes the path
 * below the mount point, and a pure unit check of the mount stripping.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { createGateway } from "../../src/app.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { withoutMount } from "../../src/gateway/public_app.ts";
import { createLogger } from "../../src/telemetry/mod.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded } from "../_helpers/wait.ts";

Deno.test("mount: a user's Hono app mounting the gateway at /gw and /t/:tenant/gw forwards the path below it", async () => {
  const upstream = startUpstream((request) => {
    const url = new URL(request.url);
    return new Response(`${url.pathname}${url.search}`);
  });
  const gateway = createGateway(
    parseConfig({
      kv: { path: ":memory:" },
      services: { api: { prefix: "/api", upstreams: [upstream.origin] } },
    }),
    { env: {}, logger: createLogger({ level: "error", write: () => {} }) },
  );
  await gateway.ready;
  const app = new Hono();
  app.get("/", (c) => c.text("user home"));
  app.route("/gw", gateway.app);
  app.route("/t/:tenant/gw", gateway.app);
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  const get = async (path: string) => {
    const response = await fetch(`${base}${path}`, bounded());
    return { status: response.status, body: await response.text() };
  };
  try {
    assert.deepEqual(await get("/gw/api/users?x=1"), { status: 200, body: "/api/users?x=1" });
    assert.deepEqual(await get("/t/acme/gw/api/a"), { status: 200, body: "/api/a" });
    assert.equal((await get("/gw/healthz")).status, 200);
    assert.deepEqual(await get("/"), { status: 200, body: "user home" });
    // Not below a service prefix once the mount is off: the gateway's own 404.
    const unrouted = await get("/gw/other");
    assert.equal(unrouted.status, 404);
    assert.match(unrouted.body, /no_route/);
    // A path that only starts with the mount's letters is not the gateway's.
    assert.equal((await get("/gwx/api/users")).status, 404);
  } finally {
    await server.shutdown();
    await gateway.close();
    await upstream.close();
  }
});

Deno.test("mount: withoutMount strips whole leading segments only", () => {
  const url = "http://h/gw/api?q";
  assert.equal(withoutMount(undefined, url, "")?.target, undefined);
  assert.equal(withoutMount(undefined, url, "/gw")?.target, "/api?q");
  assert.equal(withoutMount({ target: "/gw" }, url, "/gw")?.target, "/");
  assert.equal(withoutMount({ target: "/gw?x" }, url, "/gw")?.target, "/?x");
  assert.equal(withoutMount({ target: "/gwx/a" }, url, "/gw")?.target, "/gwx/a");
  assert.equal(withoutMount({ target: "/gw/a" }, url, "/gw/")?.target, "/a");
});
