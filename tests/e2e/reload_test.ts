/**
 * Live reload of a gateway process: SIGHUP and `POST /admin/reload` re-read the config file;
 * a valid one is swapped in (new services routed, removed ones drain), an invalid one is
 * refused and the running config keeps serving; breaker state carries over.
 *
 * @module
 */
import assert from "node:assert/strict";
import { type GatewayProcess, startGatewayProcess } from "../_helpers/gateway.ts";
import { startUpstream, type TestUpstream } from "../_helpers/upstream.ts";
import { bounded, waitFor } from "../_helpers/wait.ts";

const TOKEN = "reload-test-token";

/** The config file the process was started with (from its command line). */
function configPathOf(gateway: GatewayProcess): string {
  const cmdline = new TextDecoder().decode(
    new Deno.Command("cat", { args: [`/proc/${gateway.child.pid}/cmdline`] }).outputSync().stdout,
  ).split("\0");
  return cmdline[cmdline.indexOf("--config", 2) + 1];
}

/** Rewrites the services of the running process's config file, keeping everything else. */
async function rewriteServices(
  gateway: GatewayProcess,
  services: Record<string, unknown>,
): Promise<void> {
  const path = configPathOf(gateway);
  const config = JSON.parse(await Deno.readTextFile(path));
  await Deno.writeTextFile(path, JSON.stringify({ ...config, services }));
}

async function status(url: string, init: RequestInit = {}): Promise<number> {
  const response = await fetch(url, bounded(init));
  await response.body?.cancel();
  return response.status;
}

function reloadedCount(gateway: GatewayProcess): number {
  return gateway.lines.filter((line) => line.msg === "config reloaded").length;
}

async function hangUp(gateway: GatewayProcess): Promise<void> {
  const before = reloadedCount(gateway);
  // The main thread logs "config reloaded", then each worker once it has the new config
  // (README, "Workers"): the reload is in force once every thread said so.
  const workers = Number(gateway.lines.find((line) => line.msg === "listening")?.workers ?? 0);
  gateway.child.kill("SIGHUP");
  await waitFor(() => reloadedCount(gateway) >= before + 1 + workers, {
    what: "config reloaded",
  });
}

function service(upstream: TestUpstream, prefix: string): Record<string, unknown> {
  return { prefix, upstreams: [upstream.origin], timeoutMs: 5000 };
}

Deno.test("reload: SIGHUP routes a new service; a removed one finishes its slow request, then 404", async () => {
  let releaseSlow: () => void = () => {};
  const slowGate = new Promise<void>((resolve) => releaseSlow = resolve);
  const upstream = startUpstream(async (request) => {
    if (new URL(request.url).pathname.endsWith("/slow")) await slowGate;
    return new Response("ok");
  });
  const gateway = await startGatewayProcess({
    services: { a: service(upstream, "/a"), b: service(upstream, "/b") },
  });
  try {
    assert.equal(await status(`${gateway.url}/c/x`), 404);

    // b's slow request is in flight while b is removed and c added.
    const slow = fetch(`${gateway.url}/b/slow`, bounded({}, 10_000));
    await waitFor(() => upstream.requests.some((r) => r.url.endsWith("/b/slow")));
    await rewriteServices(gateway, { a: service(upstream, "/a"), c: service(upstream, "/c") });
    await hangUp(gateway);

    assert.equal(await status(`${gateway.url}/c/x`), 200);
    assert.equal(await status(`${gateway.url}/a/x`), 200);
    assert.equal(await status(`${gateway.url}/b/x`), 404);
    releaseSlow();
    const response = await slow;
    assert.equal(response.status, 200);
    assert.equal(await response.text(), "ok");

    const line = gateway.lines.find((l) => l.msg === "config reloaded")!;
    assert.deepEqual(line.added, ["c"]);
    assert.deepEqual(line.removed, ["b"]);
    assert.deepEqual(line.changed, []);
    const stopped = await gateway.stop();
    assert.equal(stopped.code, 0, gateway.stderr());
  } finally {
    releaseSlow();
    await gateway.stop("SIGKILL");
    await upstream.close();
  }
});

Deno.test("reload: an invalid file is refused with its problems logged; the old config keeps serving", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gateway = await startGatewayProcess({ services: { a: service(upstream, "/a") } });
  try {
    await rewriteServices(gateway, {
      a: { prefix: "no-slash", upstreams: ["not a url"] },
    });
    gateway.child.kill("SIGHUP");
    const isRefusal = (line: Record<string, unknown>) =>
      String(line.msg).startsWith("config reload refused");
    await waitFor(() => gateway.lines.some(isRefusal), { what: "reload refused" });
    const refused = gateway.lines.find(isRefusal)!;
    const problems = refused.problems as string[];
    assert.ok(problems.length >= 2, JSON.stringify(problems));
    // One line per problem, as start-up prints them.
    for (const problem of problems) {
      await waitFor(() => gateway.lines.some((line) => line.msg === problem), { what: problem });
    }
    assert.equal(await status(`${gateway.url}/a/x`), 200);
    assert.equal(reloadedCount(gateway), 0);
  } finally {
    await gateway.stop("SIGKILL");
    await upstream.close();
  }
});

Deno.test("reload: POST /admin/reload needs the token, answers 400 with problems, 200 with a summary", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gateway = await startGatewayProcess(
    { services: { a: service(upstream, "/a") } },
    { env: { BREAKWATER_ADMIN_TOKEN: TOKEN } },
  );
  const reload = (token?: string) =>
    fetch(
      `${gateway.adminUrl}/admin/reload`,
      bounded({
        method: "POST",
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      }),
    );
  try {
    let response = await reload();
    assert.equal(response.status, 401);
    await response.body?.cancel();
    response = await reload("wrong");
    assert.equal(response.status, 401);
    await response.body?.cancel();

    await rewriteServices(gateway, { a: { prefix: "/a" } });
    response = await reload(TOKEN);
    assert.equal(response.status, 400);
    const refused = await response.json();
    assert.ok(refused.problems.length >= 1, JSON.stringify(refused));
    assert.equal(await status(`${gateway.url}/a/x`), 200);

    await rewriteServices(gateway, {
      a: { ...service(upstream, "/a"), timeoutMs: 4000 },
      d: service(upstream, "/d"),
    });
    response = await reload(TOKEN);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), {
      added: ["d"],
      removed: [],
      changed: ["a"],
      ignored: [],
    });
    assert.equal(await status(`${gateway.url}/d/x`), 200);
    assert.equal(await status(`${gateway.url}/a/x`), 200);
  } finally {
    await gateway.stop("SIGKILL");
    await upstream.close();
  }
});

Deno.test("reload: POST /admin/reload is 403 without BREAKWATER_ADMIN_TOKEN", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gateway = await startGatewayProcess({ services: { a: service(upstream, "/a") } });
  try {
    assert.equal(
      await status(`${gateway.adminUrl}/admin/reload`, {
        method: "POST",
        headers: { authorization: "Bearer anything" },
      }),
      403,
    );
  } finally {
    await gateway.stop("SIGKILL");
    await upstream.close();
  }
});

Deno.test("reload: breaker state survives (forced open, reload with a new breaker policy, still open)", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gateway = await startGatewayProcess(
    { services: { a: service(upstream, "/a") }, listen: { hostname: "127.0.0.1", port: 0 } },
    { env: { BREAKWATER_ADMIN_TOKEN: TOKEN } },
  );
  const auth = { authorization: `Bearer ${TOKEN}`, "content-type": "application/json" };
  try {
    assert.equal(
      await status(`${gateway.adminUrl}/admin/breakers/a`, {
        method: "POST",
        headers: auth,
        body: JSON.stringify({ action: "open" }),
      }),
      200,
    );
    assert.equal(await status(`${gateway.url}/a/x`), 503);

    // Same services: the breaker object carries over.
    await hangUp(gateway);
    assert.equal(await status(`${gateway.url}/a/x`), 503);

    // A new breaker policy and a new service: a new breaker reads the state back from KV.
    await rewriteServices(gateway, {
      a: { ...service(upstream, "/a"), breaker: { failureThreshold: 7 } },
      e: service(upstream, "/e"),
    });
    await hangUp(gateway);
    assert.equal(await status(`${gateway.url}/a/x`), 503);
    assert.equal(await status(`${gateway.url}/e/x`), 200);
    const breakers = await (await fetch(`${gateway.adminUrl}/admin/breakers`, bounded())).json();
    const a = breakers.services.find((view: { service: string }) => view.service === "a");
    assert.equal(a.state, "forced_open");
  } finally {
    await gateway.stop("SIGKILL");
    await upstream.close();
  }
});

Deno.test("reload: listen changes are not applied live; a warning names them", async () => {
  const upstream = startUpstream(() => new Response("ok"));
  const gateway = await startGatewayProcess({ services: { a: service(upstream, "/a") } });
  try {
    const path = configPathOf(gateway);
    const config = JSON.parse(await Deno.readTextFile(path));
    await Deno.writeTextFile(
      path,
      JSON.stringify({ ...config, listen: { hostname: "127.0.0.1", port: 1 } }),
    );
    await hangUp(gateway);
    const warning = gateway.lines.find((line) =>
      line.msg === "config keys need a restart; the running values are kept"
    );
    assert.deepEqual(warning?.keys, ["listen"]);
    assert.equal(await status(`${gateway.url}/a/x`), 200);
  } finally {
    await gateway.stop("SIGKILL");
    await upstream.close();
  }
});
