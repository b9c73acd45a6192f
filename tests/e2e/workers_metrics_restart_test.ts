/**
 * A gateway process with `"workers": 2` whose worker 0 crashes and is restarted: the admin
 * port's `/metrics` keeps counting what the crashed worker served (its replacement starts from
 * zero), so the instance's request count never drops and keeps matching what the upstream saw.
 */
import assert from "node:assert/strict";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { bounded, closeAll, waitFor } from "../_helpers/wait.ts";

/** A fresh connection per request, so the kernel's `SO_REUSEPORT` choice varies. */
async function getFresh(url: string): Promise<string> {
  const response = await fetch(url, bounded({ headers: { connection: "close" } }));
  return await response.text();
}

async function workersOf(gateway: GatewayProcess) {
  const response = await fetch(`${gateway.adminUrl}/admin/workers`, bounded());
  assert.equal(response.status, 200);
  const body = await response.json() as {
    workers: { index: number; listening: boolean; requests: number; restarts: number }[];
  };
  return body.workers;
}

/** The instance's request count for the service on `/metrics`. */
async function servedOnMetrics(gateway: GatewayProcess): Promise<number> {
  const text = await (await fetch(`${gateway.adminUrl}/metrics`, bounded())).text();
  return [...text.matchAll(
    /^http_server_request_duration_seconds_count\{[^}]*service="api"[^}]*\} (\d+)/gm,
  )].reduce((sum, match) => sum + Number(match[1]), 0);
}

Deno.test("workers 2: /metrics counts on across a worker restart (no counter reset)", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  let gateway: GatewayProcess | null = null;
  try {
    gateway = await startGatewayProcess({
      workers: 2,
      services: { api: { prefix: "/api", upstreams: [upstream.origin] } },
    }, { env: { BREAKWATER_TEST_HOOKS: "1" } });
    await waitFor(async () => {
      assert.equal(await getFresh(`${gateway!.url}/api/x`), "ok");
      return (await workersOf(gateway!)).every((worker) => worker.requests > 0);
    }, { timeoutMs: 10_000, what: "both workers answered requests" });
    // A scrape that sees every request (so worker 0's count is known before it crashes).
    await waitFor(
      async () => await servedOnMetrics(gateway!) === upstream.requests.length,
      { timeoutMs: 5000, what: "/metrics counts every request" },
    );
    const servedBefore = upstream.requests.length;

    const crash = await fetch(`${gateway.adminUrl}/admin/test/crash-worker/0`, {
      ...bounded(),
      method: "POST",
    });
    assert.equal(crash.status, 200);
    await crash.body?.cancel();
    await waitFor(async () => {
      const workers = await workersOf(gateway!);
      return workers[0].restarts === 1 && workers.every((worker) => worker.listening);
    }, { timeoutMs: 10_000, what: "worker 0 restarted" });
    // The replacement has served nothing: the count is the same, not worker 1's alone.
    assert.equal(await servedOnMetrics(gateway), servedBefore);

    // Both serve again; the count goes on from there.
    const before = (await workersOf(gateway)).map((worker) => worker.requests);
    await waitFor(async () => {
      assert.equal(await getFresh(`${gateway!.url}/api/x`), "ok");
      const after = (await workersOf(gateway!)).map((worker) => worker.requests);
      return after.every((count, index) => count > before[index]);
    }, { timeoutMs: 10_000, what: "both workers served after the restart" });
    assert.ok(upstream.requests.length > servedBefore);
    await waitFor(
      async () => await servedOnMetrics(gateway!) === upstream.requests.length,
      { timeoutMs: 5000, what: "/metrics counts the requests of before and after the restart" },
    );
    assert.equal((await gateway.stop("SIGTERM")).code, 0, gateway.stderr());
    gateway = null;
  } finally {
    await gateway?.stop("SIGKILL");
    await closeAll({ upstream });
  }
});
