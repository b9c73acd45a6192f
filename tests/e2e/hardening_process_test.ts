/**
 * Hardening at process level, against real `deno run src/main.ts` gateways: a KV Connect server
 * that is not there, SIGTERM under a load generator, and the admin token's secrecy.
 */
import assert from "node:assert/strict";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { freePort, startRawUpstream, startUpstream } from "../_helpers/upstream.ts";
import { bounded, waitFor, within } from "../_helpers/wait.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A clean exit after SIGTERM takes well under this (shutdown.timeoutMs is 5 s at most here). */
const EXIT_WITHIN_MS = 10_000;

async function json(response: Response): Promise<Record<string, unknown>> {
  return await response.json();
}

/** SIGTERM, then the exit status, or a failure when the process does not exit in time. */
function stopWithin(gateway: GatewayProcess): Promise<Deno.CommandStatus> {
  return within(gateway.stop(), EXIT_WITHIN_MS, "the gateway to exit after SIGTERM");
}

for (
  const variant of [
    { name: "refuses connections (closed port)", hang: false },
    { name: "accepts but never answers", hang: true },
  ]
) {
  Deno.test(`lost KV: a KV Connect URL that ${variant.name} -> degraded, traffic flows, breaker trips locally`, async () => {
    const blackhole = variant.hang
      ? startRawUpstream(async (conn) => {
        // Read and never answer, until the test closes the listener.
        const buffer = new Uint8Array(4096);
        while ((await conn.read(buffer).catch(() => null)) !== null) { /* swallow */ }
      })
      : null;
    const kvUrl = blackhole?.origin ?? `http://127.0.0.1:${freePort()}`;
    let fail = false;
    const upstream = startUpstream(() =>
      new Response(fail ? "boom" : "ok", { status: fail ? 500 : 200 })
    );
    let gateway: GatewayProcess | null = null;
    try {
      gateway = await startGatewayProcess({
        kv: { path: kvUrl },
        // One thread: the exact sequence below (the third failure trips, the fourth call is
        // refused) is the single-threaded breaker's; a worker's trip reaches it by a message.
        workers: 1,
        services: {
          s: {
            prefix: "/s",
            upstreams: [upstream.origin],
            breaker: { failureThreshold: 3, windowMs: 10_000, recoveryTimeoutMs: 30_000 },
          },
        },
      }, { env: { DENO_KV_ACCESS_TOKEN: "test-token-not-a-secret" }, timeoutMs: 20_000 });
      const url = gateway.url;
      // Degraded, and still ready: it serves with local breakers.
      await waitFor(async () => {
        const r = await fetch(`${url}/readyz`, bounded());
        const body = await json(r);
        return r.status === 200 && body.status === "degraded";
      }, { timeoutMs: 5000, intervalMs: 50, what: "readyz 200 degraded" });
      for (let i = 0; i < 5; i++) {
        const r = await fetch(`${url}/s/${i}`, bounded());
        assert.equal(r.status, 200);
        assert.equal(await r.text(), "ok");
      }
      fail = true;
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) {
        const r = await fetch(`${url}/s/f${i}`, bounded());
        statuses.push(r.status);
        await r.body?.cancel();
      }
      assert.deepEqual(statuses, [500, 500, 500, 503, 503, 503]);
      const hitsBefore = upstream.requests.length;
      const r = await fetch(`${url}/s/again`, bounded());
      assert.equal(r.headers.get("x-breakwater-error"), "breaker_open");
      await r.body?.cancel();
      assert.equal(upstream.requests.length, hitsBefore);
      const ready = await json(await fetch(`${url}/readyz`, bounded()));
      assert.equal(ready.status, "degraded");
      const status = await stopWithin(gateway);
      assert.equal(status.code, 0, gateway.stderr());
      assert.ok(gateway.lines.some((line) => line.msg === "shutdown complete"));
    } finally {
      await gateway?.stop("SIGKILL");
      await upstream.close();
      await blackhole?.close();
    }
  });
}

// Deleting the KV file or making its folder read-only is not tested at process level: a SQLite
// handle that is already open keeps its fd, so the process would not notice either. What a file
// KV can do to a running process is be locked by another writer; that is tested below. A closed
// handle and slow KV are covered in-process by tests/breaker/*.

Deno.test("lost KV: the KV file locked by another writer -> requests flow, breaker trips locally, recovery", async () => {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-kvlock-" });
  const kvPath = `${dir}/shared.kv`;
  let fail = false;
  const upstream = startUpstream(() =>
    new Response(fail ? "boom" : "ok", { status: fail ? 500 : 200 })
  );
  let gateway: GatewayProcess | null = null;
  let db: { exec(sql: string): void; close(): void } | null = null;
  try {
    gateway = await startGatewayProcess({
      // One thread: the exact status sequence below is the single-threaded breaker's.
      workers: 1,
      services: {
        s: {
          prefix: "/s",
          upstreams: [upstream.origin],
          breaker: { failureThreshold: 3, windowMs: 10_000, recoveryTimeoutMs: 30_000 },
        },
      },
    }, { sharedKvPath: kvPath });
    const url = gateway.url;
    assert.equal((await json(await fetch(`${url}/readyz`, bounded()))).status, "ready");
    // Another process-like writer takes the write lock and holds it.
    const { DatabaseSync } = await import("node:sqlite");
    db = new DatabaseSync(kvPath);
    db.exec("PRAGMA busy_timeout = 0");
    db.exec("BEGIN EXCLUSIVE");
    const latencies: number[] = [];
    const statuses: number[] = [];
    const timed = async (path: string) => {
      const t0 = performance.now();
      const r = await fetch(`${url}${path}`, bounded());
      await r.body?.cancel();
      latencies.push(performance.now() - t0);
      return r.status;
    };
    for (let i = 0; i < 5; i++) assert.equal(await timed(`/s/ok${i}`), 200);
    fail = true;
    for (let i = 0; i < 6; i++) statuses.push(await timed(`/s/f${i}`));
    // The failures' KV writes hit the lock; the local breaker opens on its own evidence.
    assert.deepEqual(statuses, [500, 500, 500, 503, 503, 503]);
    const readyDuringLock = await fetch(`${url}/readyz`, bounded());
    assert.equal(readyDuringLock.status, 200);
    const during = await json(readyDuringLock);
    assert.ok(["ready", "degraded"].includes(String(during.status)), JSON.stringify(during));
    // The request path never waits for the locked store.
    const slowest = Math.max(...latencies);
    assert.ok(slowest < 250, `a request took ${slowest.toFixed(0)} ms while KV was locked`);
    // Release the lock: the instance rejoins and is ready again.
    // The writes that hit the lock time out (1 s): /readyz says degraded, and stays 200.
    const seenStates = new Set<string>();
    await waitFor(async () => {
      const r = await fetch(`${url}/readyz`, bounded());
      assert.equal(r.status, 200);
      seenStates.add(String((await json(r)).status));
      return seenStates.has("degraded");
    }, { timeoutMs: 4000, intervalMs: 50, what: "readyz degraded while KV is locked" });
    db.exec("COMMIT");
    db.close();
    db = null;
    await waitFor(async () => {
      const body = await json(await fetch(`${url}/readyz`, bounded()));
      return body.status === "ready";
    }, { timeoutMs: 8000, intervalMs: 50, what: "readyz ready again after the lock" });
    // Operators see both moments in the log.
    const logged = (prefix: string) =>
      gateway!.lines.findIndex((line) => String(line.msg).startsWith(prefix));
    await waitFor(() => logged("kv recovered") >= 0, {
      timeoutMs: 2000,
      intervalMs: 20,
      what: "a 'kv recovered' log line",
    });
    assert.ok(logged("kv degraded") >= 0 && logged("kv degraded") < logged("kv recovered"));
    const still = await fetch(`${url}/s/after`, bounded());
    assert.equal(still.status, 503, "the open breaker was forgotten on recovery");
    await still.body?.cancel();
    const status = await stopWithin(gateway);
    assert.equal(status.code, 0, gateway.stderr());
  } finally {
    try {
      db?.exec("ROLLBACK");
      db?.close();
    } catch {
      // closed
    }
    await gateway?.stop("SIGKILL");
    await upstream.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** Outcomes of the load generator's requests, classified after the run. */
interface LoadOutcomes {
  /** 200 with the whole body. */
  ok: number;
  /** 503 `draining`. */
  draining: number;
  /** No answer, and the request never reached the upstream: it had no effect anywhere. */
  refused: number;
  /** Anything else: a cut answer, a wrong one, a hang, or an answer lost after forwarding. */
  bad: string[];
}

for (const drainDelayMs of [0, 300]) {
  Deno.test(`SIGTERM under load (drainDelayMs ${drainDelayMs}): every answer complete, the rest refused cleanly, exit 0`, async () => {
    const BODY = "x".repeat(32 * 1024);
    const reachedUpstream = new Set<string>();
    const upstream = startUpstream(async (request) => {
      reachedUpstream.add(new URL(request.url).pathname);
      await sleep(15);
      return new Response(BODY);
    });
    const gateway = await startGatewayProcess({
      shutdown: { drainDelayMs, timeoutMs: 5000 },
      services: { s: { prefix: "/s", upstreams: [upstream.origin], timeoutMs: 5000 } },
    });
    const outcomes: LoadOutcomes = { ok: 0, draining: 0, refused: 0, bad: [] };
    /** Requests that got no answer at all: path -> error, judged once the run is over. */
    const unanswered = new Map<string, string>();
    try {
      let stopLoad = false;
      let signalledAt = 0;
      const signaller = (async () => {
        // SIGTERM lands in the middle of established load.
        await waitFor(() => outcomes.ok >= 100, { timeoutMs: 10_000, what: "100 answers" });
        signalledAt = Date.now();
        gateway.child.kill("SIGTERM");
        await sleep(drainDelayMs + 600); // keep the load on through the drain and the exit
        stopLoad = true;
      })().finally(() => stopLoad = true);
      const loops = Array.from({ length: 16 }, async (_, loop) => {
        for (let i = 0; i < 2000 && !stopLoad; i++) {
          const path = `/s/${loop}/${i}`;
          let response: Response;
          try {
            response = await fetch(`${gateway.url}${path}`, bounded());
          } catch (error) {
            const cause = (error as Error).cause;
            unanswered.set(path, `${error}${cause ? ` (${cause})` : ""}`);
            await sleep(10);
            continue;
          }
          let body: string;
          try {
            body = await response.text();
          } catch (error) {
            outcomes.bad.push(`cut mid-response after ${response.status}: ${error}`);
            continue;
          }
          if (response.status === 200 && body === BODY) outcomes.ok++;
          else if (
            response.status === 503 && response.headers.get("x-breakwater-error") === "draining"
          ) outcomes.draining++;
          else outcomes.bad.push(`${response.status} with ${body.length} bytes`);
        }
      });
      await Promise.all([signaller, ...loops]);
      const status = await stopWithin(gateway);
      const exitedAfterMs = Date.now() - signalledAt;
      for (const [path, error] of unanswered) {
        // A request the gateway forwarded was accepted: losing its answer is not a refusal.
        if (reachedUpstream.has(path)) outcomes.bad.push(`forwarded, answer lost: ${error}`);
        else if (/TimeoutError|aborted/i.test(error)) outcomes.bad.push(`hung: ${error}`);
        else outcomes.refused++;
      }
      console.log(`outcomes: ${JSON.stringify(outcomes)}`);
      assert.deepEqual(outcomes.bad, [], JSON.stringify(outcomes));
      assert.ok(outcomes.ok > 50, JSON.stringify(outcomes));
      assert.ok(outcomes.refused + outcomes.draining > 0, JSON.stringify(outcomes));
      // During the drain delay the listener still accepts, and answers 503 draining.
      if (drainDelayMs > 0) assert.ok(outcomes.draining > 0, JSON.stringify(outcomes));
      assert.equal(status.code, 0, gateway.stderr());
      assert.ok(
        exitedAfterMs < drainDelayMs + 5000 + 1000,
        `exit ${exitedAfterMs} ms after SIGTERM`,
      );
      const complete = gateway.lines.find((line) => line.msg === "shutdown complete");
      assert.equal(complete?.clean, true, JSON.stringify(complete));
    } finally {
      await gateway.stop("SIGKILL");
      await upstream.close();
    }
  });
}

Deno.test("admin security: token, Authorization and cookies never logged; 401 / 403", async () => {
  const token = `tok-${crypto.randomUUID()}`;
  const cookie = `sess-${crypto.randomUUID()}`;
  const querySecret = `qs-${crypto.randomUUID()}`;
  const upstream = startUpstream(() => new Response("ok"));
  const services = { s: { prefix: "/s", upstreams: [upstream.origin] } };
  const withToken = await startGatewayProcess({ services }, {
    env: { BREAKWATER_ADMIN_TOKEN: token, BREAKWATER_LOG_LEVEL: "debug" },
  });
  const withoutToken = await startGatewayProcess({ services }, {
    env: { BREAKWATER_LOG_LEVEL: "debug" },
  });
  try {
    const post = (base: string, auth: string | null, action = "open") =>
      fetch(
        `${base}/admin/breakers/s`,
        bounded({
          method: "POST",
          headers: {
            "content-type": "application/json",
            ...(auth === null ? {} : { authorization: auth }),
            cookie: `session=${cookie}`,
          },
          body: JSON.stringify({ action }),
        }),
      ).then(async (r) => ({ status: r.status, body: await r.text() }));

    assert.equal((await post(withToken.adminUrl, null)).status, 401);
    assert.equal((await post(withToken.adminUrl, "Bearer wrong")).status, 401);
    assert.equal((await post(withToken.adminUrl, `Bearer ${token}x`)).status, 401);
    assert.equal((await post(withToken.adminUrl, `Basic ${btoa(`a:${token}`)}`)).status, 401);
    assert.equal((await post(withToken.adminUrl, token)).status, 401);
    const ok = await post(withToken.adminUrl, `Bearer ${token}`);
    assert.equal(ok.status, 200, ok.body);
    assert.equal((await post(withToken.adminUrl, `Bearer ${token}`, "reset")).status, 200);
    assert.equal((await post(withToken.adminUrl, `Bearer ${token}`, "bogus")).status, 400);
    for (const auth of [null, `Bearer ${token}`, "Bearer anything"]) {
      assert.equal((await post(withoutToken.adminUrl, auth)).status, 403);
    }
    // The public port: secrets in Authorization, cookies and the query string.
    for (const gw of [withToken, withoutToken]) {
      const r = await fetch(
        `${gw.url}/s/x?token=${querySecret}`,
        bounded({
          headers: { authorization: `Bearer ${token}`, cookie: `session=${cookie}` },
        }),
      );
      assert.equal(r.status, 200);
      await r.text();
      const missing = await fetch(
        `${gw.url}/nope?token=${querySecret}`,
        bounded({
          headers: { authorization: `Bearer ${token}`, cookie: `session=${cookie}` },
        }),
      );
      assert.equal(missing.status, 404);
      await missing.text();
    }
    const metrics = await (await fetch(`${withToken.adminUrl}/metrics`, bounded())).text();
    const breakers = await (await fetch(`${withToken.adminUrl}/admin/breakers`, bounded())).text();
    await stopWithin(withToken);
    await stopWithin(withoutToken);
    const everything = [
      JSON.stringify(withToken.lines),
      withToken.stderr(),
      JSON.stringify(withoutToken.lines),
      withoutToken.stderr(),
      metrics,
      breakers,
    ].join("\n");
    assert.ok(withToken.lines.some((line) => line.msg === "request"), "no access log at all");
    for (const secret of [token, cookie, querySecret]) {
      assert.ok(!everything.includes(secret), `${secret.slice(0, 4)}... leaked`);
    }
    assert.ok(!/authorization|cookie/i.test(JSON.stringify(withToken.lines)));
  } finally {
    await withToken.stop("SIGKILL");
    await withoutToken.stop("SIGKILL");
    await upstream.close();
  }
});
