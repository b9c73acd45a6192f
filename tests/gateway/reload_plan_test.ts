/**
 * The reload plan: added, removed, changed and unchanged services; restart-only keys kept.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { planReload } from "../../src/gateway/reload.ts";

const upstreams = ["http://127.0.0.1:9001"];

Deno.test("planReload: sorts services and keeps the running listeners, kv and telemetry", () => {
  const running = parseConfig({
    listen: { port: 8080 },
    kv: { path: ":memory:" },
    services: {
      same: { prefix: "/same", upstreams },
      gone: { prefix: "/gone", upstreams },
      moved: { prefix: "/moved", upstreams },
    },
  });
  const next = parseConfig({
    listen: { port: 9999 },
    kv: { path: "./other.kv" },
    limits: { headerTimeoutMs: 1111 },
    services: {
      same: { prefix: "/same", upstreams },
      moved: { prefix: "/moved", upstreams, timeoutMs: 1234 },
      fresh: { prefix: "/fresh", upstreams },
    },
  });
  const plan = planReload(running, next);
  assert.deepEqual(plan.added, ["fresh"]);
  assert.deepEqual(plan.removed, ["gone"]);
  assert.deepEqual(plan.changed, ["moved"]);
  assert.deepEqual(plan.unchanged, ["same"]);
  assert.deepEqual(plan.ignored, ["listen", "kv", "limits.headerTimeoutMs"]);
  assert.equal(plan.config.listen.port, 8080);
  assert.equal(plan.config.limits.headerTimeoutMs, running.limits.headerTimeoutMs);
  assert.equal(plan.config.kv.path, ":memory:");
  assert.equal(plan.config.services.moved.timeoutMs, 1234);
});

Deno.test("planReload: the same file changes nothing", () => {
  const raw = { kv: { path: ":memory:" }, services: { a: { prefix: "/a", upstreams } } };
  const plan = planReload(parseConfig(raw), parseConfig(structuredClone(raw)));
  assert.deepEqual([plan.added, plan.removed, plan.changed, plan.ignored], [[], [], [], []]);
  assert.deepEqual(plan.unchanged, ["a"]);
});
