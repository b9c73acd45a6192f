/**
 * The incident routes of the admin API on real gateways (createGateway, real Deno KV in memory
 * or on a temp file): `GET /admin/audit`, the caller label `by` on the force route and its log
 * line, the trip entry's failure count, and `GET /admin/fleet` across two gateway instances.
 */
import assert from "node:assert/strict";
import { createGateway, type Gateway } from "../../src/app.ts";
import type { AuditEntry } from "../../src/breaker/audit.ts";
import type { FleetSnapshot } from "../../src/breaker/fleet_view.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { createLogger } from "../../src/telemetry/mod.ts";
import { waitFor } from "../_helpers/wait.ts";

const TOKEN = "audit-test-token";

/** A loopback port nothing listens on: requests to it fail fast with "connection refused". */
function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

function configOf(kvPath: string) {
  const dead = `http://127.0.0.1:${closedPort()}`;
  return parseConfig({
    kv: { path: kvPath },
    telemetry: { prometheus: false },
    services: {
      users: { prefix: "/api/users", upstreams: [dead] },
      orders: {
        prefix: "/api/orders",
        upstreams: [dead],
        breaker: { failureThreshold: 3, recoveryTimeoutMs: 60_000 },
      },
    },
  });
}

async function withGateway(
  run: (gateway: Gateway, lines: Record<string, unknown>[]) => Promise<void>,
): Promise<void> {
  const lines: Record<string, unknown>[] = [];
  const gateway = createGateway(configOf(":memory:"), {
    env: { BREAKWATER_ADMIN_TOKEN: TOKEN },
    instanceId: "gw-1",
    logger: createLogger({ level: "info", write: (line) => lines.push(JSON.parse(line)) }),
  });
  try {
    await gateway.ready;
    await run(gateway, lines);
  } finally {
    await gateway.close();
  }
}

async function force(gateway: Gateway, service: string, body: unknown): Promise<Response> {
  return await gateway.adminApp.request(`/admin/breakers/${service}`, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function audit(gateway: Gateway, query = ""): Promise<AuditEntry[]> {
  const response = await gateway.adminApp.request(`/admin/audit${query}`);
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("cache-control"), "no-store");
  const body = await response.json();
  assert.equal(body.fleet, true);
  return body.entries;
}

Deno.test("GET /admin/audit: forced changes with their label, newest first, filtered and limited", async () => {
  await withGateway(async (gateway, lines) => {
    assert.deepEqual(await audit(gateway), []);
    const opened = await force(gateway, "orders", { action: "open", by: "alice" });
    assert.equal(opened.status, 200);
    assert.equal((await opened.json()).state, "forced_open");
    assert.equal((await force(gateway, "orders", { action: "reset" })).status, 200);
    assert.equal((await force(gateway, "users", { action: "close", by: "  bob " })).status, 200);

    const all = await audit(gateway);
    assert.deepEqual(
      all.map((entry) => [entry.service, entry.kind, entry.by, entry.instanceId]),
      [
        ["users", "force_close", "bob", "gw-1"],
        ["orders", "reset", "admin", "gw-1"],
        ["orders", "force_open", "alice", "gw-1"],
      ],
    );
    assert.equal(all[2].from, "closed");
    assert.equal(all[2].to, "forced_open");
    assert.ok(all.every((entry) => entry.fleet && Number.isFinite(entry.atMs)));
    assert.deepEqual(
      (await audit(gateway, "?service=orders")).map((entry) => entry.kind),
      ["reset", "force_open"],
    );
    assert.deepEqual((await audit(gateway, "?limit=1")).map((entry) => entry.kind), [
      "force_close",
    ]);

    // Each forced change is logged with its label and the state it led to.
    const forcedLines = lines.filter((line) => line.msg === "breaker forced");
    assert.deepEqual(
      forcedLines.map((line) => [line.service, line.action, line.by, line.state, line.fleet]),
      [
        ["orders", "open", "alice", "forced_open", true],
        ["orders", "reset", "admin", "closed", true],
        ["users", "close", "bob", "forced_closed", true],
      ],
    );
    assert.ok(lines.every((line) => !JSON.stringify(line).includes(TOKEN)), "token logged");
  });
});

Deno.test("GET /admin/audit: an unknown service is 404, a bad limit 400 naming it", async () => {
  await withGateway(async (gateway) => {
    const unknown = await gateway.adminApp.request("/admin/audit?service=nope");
    assert.equal(unknown.status, 404);
    assert.equal((await unknown.json()).detail, "nope");
    for (const limit of ["0", "1001", "abc", "2.5", "-1"]) {
      const response = await gateway.adminApp.request(`/admin/audit?limit=${limit}`);
      assert.equal(response.status, 400, limit);
      assert.match(response.headers.get("content-type") ?? "", /problem\+json/);
      assert.match((await response.json()).detail, /^limit must be/);
    }
    assert.equal((await gateway.adminApp.request("/admin/audit?limit=1000")).status, 200);
  });
});

Deno.test("force: `by` is validated, named in the 400, and never the token itself", async () => {
  await withGateway(async (gateway) => {
    const bad: [unknown, RegExp][] = [
      [{ action: "open", by: "" }, /^by: must not be empty$/],
      [{ action: "open", by: "   " }, /^by: must not be blank$/],
      [{ action: "open", by: "x".repeat(65) }, /^by: at most 64 characters$/],
      [{ action: "open", by: "eve\nforged line" }, /^by: no control characters$/],
      [{ action: "open", by: 42 }, /^by: /],
    ];
    for (const [body, detail] of bad) {
      const response = await force(gateway, "orders", body);
      assert.equal(response.status, 400, JSON.stringify(body));
      assert.match((await response.json()).detail, detail, JSON.stringify(body));
    }
    const token = await force(gateway, "orders", { action: "open", by: TOKEN });
    assert.equal(token.status, 400);
    assert.match((await token.json()).title, /must not be the admin token/);
    const unknownKey = await force(gateway, "orders", { action: "open", who: "x" });
    assert.equal(unknownKey.status, 400);
    await unknownKey.body?.cancel();
    // Nothing of it reached the breaker or the timeline.
    assert.equal(gateway.breaker.view("orders").state, "closed");
    assert.deepEqual(await audit(gateway), []);
    // Without the token: 401, and nothing recorded either.
    const anonymous = await gateway.adminApp.request("/admin/breakers/orders", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ action: "open", by: "mallory" }),
    });
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    assert.deepEqual(await audit(gateway), []);
  });
});

Deno.test("a trip's audit entry names the instance and the failures that tripped it", async () => {
  await withGateway(async (gateway) => {
    for (let i = 0; i < 6 && gateway.breaker.view("orders").state === "closed"; i++) {
      const response = await gateway.app.request("http://gw.test/api/orders/1");
      await response.body?.cancel();
    }
    await waitFor(() => gateway.breaker.view("orders").state === "open", {
      what: "orders open",
    });
    let trip: AuditEntry | undefined;
    await waitFor(async () => {
      trip = (await audit(gateway, "?service=orders")).find((entry) => entry.kind === "trip");
      return trip !== undefined;
    }, { what: "the trip entry" });
    assert.equal(trip!.instanceId, "gw-1");
    assert.equal(trip!.by, null);
    assert.equal(trip!.from, "closed");
    assert.equal(trip!.to, "open");
    // The window restarts at zero once open; the entry keeps the count that reached 3.
    assert.equal(trip!.failures, 3);
    assert.equal(gateway.breaker.view("orders").failuresInWindow, 0);
  });
});

Deno.test("GET /admin/fleet: two instances on one KV file see each other alive, then stopped", async () => {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-fleet-" });
  const config = configOf(`${dir}/fleet.kv`);
  const logger = createLogger({ level: "off", write: () => {} });
  const first = createGateway(config, { logger, instanceId: "gw-a" });
  const second = createGateway(config, { logger, instanceId: "gw-b" });
  let secondClosed = false;
  const fleetOf = async (gateway: Gateway): Promise<FleetSnapshot> => {
    const response = await gateway.adminApp.request("/admin/fleet");
    assert.equal(response.status, 200);
    return await response.json();
  };
  try {
    await Promise.all([first.ready, second.ready]);
    let seen: FleetSnapshot | undefined;
    await waitFor(async () => {
      seen = await fleetOf(first);
      return seen.members.some((member) => member.instanceId === "gw-b");
    }, { what: "gw-b in gw-a's fleet view" });
    assert.equal(seen!.known, true);
    assert.equal(seen!.instanceId, "gw-a");
    const [self, other] = seen!.members;
    assert.equal(self.instanceId, "gw-a");
    assert.equal(self.self, true);
    assert.equal(self.degraded, false);
    assert.equal(other.instanceId, "gw-b");
    assert.equal(other.status, "alive");
    assert.equal(other.degraded, false);
    assert.equal(other.stoppedAtMs, null);
    assert.deepEqual(other.services, ["users", "orders"]);
    assert.ok(other.heartbeatAgeMs < 3 * seen!.intervalMs, `${other.heartbeatAgeMs}`);

    // A clean stop is written as such: stopped, not silent.
    await second.close();
    secondClosed = true;
    const after = await fleetOf(first);
    const stopped = after.members.find((member) => member.instanceId === "gw-b");
    assert.equal(stopped?.status, "stopped");
    assert.ok(stopped!.stoppedAtMs! >= stopped!.startedAtMs);
    assert.equal(stopped!.degraded, null);
  } finally {
    await first.close();
    if (!secondClosed) await second.close();
    await Deno.remove(dir, { recursive: true });
  }
});
