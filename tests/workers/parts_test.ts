/** The workers' pure parts: the count for "auto", the limit shares, the metrics merge. */
import assert from "node:assert/strict";
import { parseConfig } from "../../src/config/schema.ts";
import { workerCodeFromConfigFile, workerCodePaths } from "../../src/launch.ts";
import { resolveWorkerCount, threadsFor } from "../../src/workers/count.ts";
import { mergeExpositions, parseExposition } from "../../src/workers/metrics_merge.ts";
import { shareOf, workerShare } from "../../src/workers/share.ts";

Deno.test("workers: auto is the cgroup quota rounded down, else the cores; a number stays", () => {
  assert.equal(resolveWorkerCount("auto", { cpuCores: null }, 16), 16);
  assert.equal(resolveWorkerCount("auto", { cpuCores: 2.5 }, 16), 2);
  assert.equal(resolveWorkerCount("auto", { cpuCores: 0.5 }, 16), 1);
  assert.equal(resolveWorkerCount("auto", { cpuCores: 8 }, 4), 4, "never more than the cores");
  assert.equal(resolveWorkerCount(3, { cpuCores: 1 }, 16), 3);
});

Deno.test("workers: a TLS listener runs one thread; only a number asked for is a warning", () => {
  const none = { cpuCores: null };
  assert.deepEqual(threadsFor("auto", false, none, 4), {
    count: 4,
    asked: 4,
    singleBecauseOfTls: null,
  });
  assert.deepEqual(threadsFor("auto", true, none, 4), {
    count: 1,
    asked: 4,
    singleBecauseOfTls: "auto",
  });
  assert.deepEqual(threadsFor(2, true, none, 4), {
    count: 1,
    asked: 2,
    singleBecauseOfTls: "asked",
  });
  assert.deepEqual(threadsFor(1, true, none, 4), {
    count: 1,
    asked: 1,
    singleBecauseOfTls: null,
  });
  assert.deepEqual(threadsFor("auto", true, none, 1), {
    count: 1,
    asked: 1,
    singleBecauseOfTls: null,
  });
});

Deno.test("workers: the config takes workers as auto or 1-256, default auto", () => {
  const services = { a: { prefix: "/a", upstreams: ["http://127.0.0.1:1"] } };
  assert.equal(parseConfig({ services }).workers, "auto");
  assert.equal(parseConfig({ services, workers: 1 }).workers, 1);
  assert.equal(parseConfig({ services, workers: "auto" }).workers, "auto");
  assert.equal(parseConfig({ services, workers: 4 }).workers, 4);
  for (const bad of [0, 1.5, "2", 257]) {
    assert.throws(() => parseConfig({ services, workers: bad }), /workers/);
  }
});

Deno.test("workers: each worker gets an even share of the limits, at least 1", () => {
  assert.equal(shareOf(20, 2), 10);
  assert.equal(shareOf(21, 2), 10, "rounded down: the instance never exceeds the total");
  assert.equal(shareOf(1, 4), 1, "a worker with no slot could serve nothing");
  const config = parseConfig({
    limits: { maxConnections: 100 },
    services: { a: { prefix: "/a", upstreams: ["http://127.0.0.1:1"], pool: { maxPending: 7 } } },
  });
  const share = workerShare(config, 2);
  assert.equal(share.limits.maxConnections, 50);
  assert.equal(share.limits.maxClientConnections, 5000);
  assert.equal(share.services.a.pool.maxConnections, 10);
  assert.equal(share.services.a.pool.maxPending, 3);
  assert.equal(share.services.a.timeoutMs, config.services.a.timeoutMs);
  assert.equal(share.services.a.websocket.maxConnections, 500);
  assert.equal(
    share.services.a.websocket.maxConnectionsPerClient,
    50,
    "split like the cap it guards, so it still binds within each worker's share",
  );
  assert.equal(share.services.a.websocket.idleTimeoutMs, config.services.a.websocket.idleTimeoutMs);
  assert.equal(workerShare(config, 1), config);
  assert.equal(config.services.a.pool.maxConnections, 20, "the instance's config is untouched");
});

const MAIN = `# HELP breakwater_breaker_state Breaker state
# TYPE breakwater_breaker_state gauge
breakwater_breaker_state{service="a"} 1
# HELP http_server_request_duration_seconds Duration
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{service="a",le="0.1"} 0
http_server_request_duration_seconds_bucket{service="a",le="+Inf"} 0
http_server_request_duration_seconds_sum{service="a"} 0
http_server_request_duration_seconds_count{service="a"} 0
# HELP breakwater_pool_limit Limit
# TYPE breakwater_pool_limit gauge
breakwater_pool_limit{service="a"} 20
`;

function worker(count: number, limit: number, state: number) {
  return `# HELP breakwater_breaker_state Breaker state
# TYPE breakwater_breaker_state gauge
breakwater_breaker_state{service="a"} ${state}
# HELP http_server_request_duration_seconds Duration
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{service="a",le="0.1"} ${count - 1}
http_server_request_duration_seconds_bucket{service="a",le="+Inf"} ${count}
http_server_request_duration_seconds_sum{service="a"} 0.25
http_server_request_duration_seconds_count{service="a"} ${count}
http_server_request_duration_seconds_count{service="b",route="x y}"} 1
# HELP breakwater_pool_limit Limit
# TYPE breakwater_pool_limit gauge
breakwater_pool_limit{service="a"} ${limit}
`;
}

Deno.test("workers: /metrics sums the request path's series over workers, the rest is main's", () => {
  const merged = mergeExpositions(MAIN, [worker(3, 10, 0), worker(5, 10, 0)]);
  const families = new Map(parseExposition(merged).map((family) => [family.name, family]));
  const samples = (name: string) => Object.fromEntries(families.get(name)!.samples);
  assert.deepEqual(samples("breakwater_breaker_state"), {
    'breakwater_breaker_state{service="a"}': 1,
  });
  assert.deepEqual(samples("http_server_request_duration_seconds"), {
    'http_server_request_duration_seconds_bucket{service="a",le="0.1"}': 6,
    'http_server_request_duration_seconds_bucket{service="a",le="+Inf"}': 8,
    'http_server_request_duration_seconds_sum{service="a"}': 0.5,
    'http_server_request_duration_seconds_count{service="a"}': 8,
    'http_server_request_duration_seconds_count{service="b",route="x y}"}': 2,
  });
  assert.deepEqual(samples("breakwater_pool_limit"), { 'breakwater_pool_limit{service="a"}': 20 });
  assert.equal(merged.match(/^# TYPE /gm)?.length, 3, "each family once");
  assert.match(
    merged,
    /^http_server_request_duration_seconds_bucket\{service="a",le="\+Inf"\} 8$/m,
  );
});

Deno.test("workers: the launcher grants the gateway's code only to a config with workers", async () => {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-workers-" });
  try {
    const services = { a: { prefix: "/a", upstreams: ["http://127.0.0.1:1"] } };
    const write = async (config: unknown) => {
      await Deno.writeTextFile(`${dir}/c.json`, JSON.stringify(config));
      return workerCodeFromConfigFile(`${dir}/c.json`);
    };
    assert.deepEqual(await write({ services, workers: 1 }), []);
    // The default is "auto": a config that says nothing runs workers and needs the code.
    const granted = await write({ services });
    assert.deepEqual(await write({ services, workers: "auto" }), granted);
    assert.deepEqual(await write({ services, workers: 2 }), granted);
    assert.equal(granted.length, 2);
    assert.ok(granted[0].endsWith("/src"), granted[0]);
    assert.ok(granted[1].endsWith("/deno.json"), granted[1]);
    assert.ok(Deno.statSync(`${granted[0]}/workers/worker_main.ts`).isFile);
    assert.deepEqual(workerCodePaths("/app/"), ["/app/src", "/app/deno.json"]);
    // A TLS listener runs on one thread whatever the setting: no worker loads code.
    const tls = { certFile: `${dir}/cert.pem`, keyFile: `${dir}/key.pem` };
    assert.deepEqual(await write({ services, listen: { tls } }), []);
    assert.deepEqual(await write({ services, workers: 4, listen: { tls } }), []);
    assert.deepEqual(
      await write({ services, workers: "many" }),
      [],
      "invalid: the gateway says so",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
