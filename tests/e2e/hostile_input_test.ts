/**
 * Hostile request targets and headers, sent as raw bytes so nothing normalises them on the way:
 * whatever the request line, `Host` or path says, the gateway only ever talks to configured
 * upstreams, and only to the one that owns the normalised path.
 */
import assert from "node:assert/strict";
import { startTestGateway } from "../_helpers/gateway.ts";
import { sendRaw, startUpstream } from "../_helpers/upstream.ts";

function statusOf(raw: string): number {
  return Number(raw.split(" ")[1]);
}

/** The path as the upstream received it (Deno does not normalise `Request.url`). */
function rawPath(url: string): string {
  return url.slice(url.indexOf("/", url.indexOf("://") + 3));
}

function bodyOf(raw: string): string {
  return raw.slice(raw.indexOf("\r\n\r\n") + 4);
}

Deno.test("hostile paths and hosts never leave the configured services", async () => {
  const seen: { service: string; path: string; host: string | null }[] = [];
  const users = startUpstream((request) => {
    seen.push({ service: "users", path: rawPath(request.url), host: request.headers.get("host") });
    return new Response("users");
  });
  const admin = startUpstream((request) => {
    seen.push({ service: "admin", path: rawPath(request.url), host: request.headers.get("host") });
    return new Response("admin");
  });
  const gw = await startTestGateway({
    services: {
      users: { prefix: "/api/users", upstreams: [users.origin] },
      internal: { prefix: "/internal", upstreams: [admin.origin] },
    },
  });
  const allowedHosts = new Set([new URL(users.origin).host, new URL(admin.origin).host]);
  try {
    const cases: { target: string; host?: string; status: number; body?: string }[] = [
      { target: "/api/users/../admin", status: 404 },
      { target: "/api/users/%2e%2e/admin", status: 404 },
      { target: "/api/users/%2E%2e/%2e%2e/internal/x", status: 200, body: "admin" },
      { target: "/api/users\\..\\..\\internal", status: 200, body: "admin" },
      { target: "//evil.example/api/users", status: 404 },
      { target: "/api/users//evil.example", status: 200, body: "users" },
      { target: "http://evil.example/api/users/1", status: 200, body: "users" },
      { target: "http://evil.example/", status: 404 },
      { target: "/api/users/1", host: "evil.example", status: 200, body: "users" },
      { target: "/api/users/1", host: "127.0.0.1:1", status: 200, body: "users" },
      // Encoded separators: refused by the default escapedSlashes "reject" (an upstream that
      // decodes %2F / %5C would otherwise serve /internal).
      { target: "/api/users/..%2f..%2finternal", status: 400 },
      { target: "/api/users/..%5C..%5Cinternal", status: 400 },
      { target: "/api/users/%252e%252e/internal", status: 400 },
      // A dot segment with ;parameters is a dot segment (Tomcat and Spring strip them).
      { target: "/api/users/..;/..;/internal/x", status: 200, body: "admin" },
      { target: "/api/users/..;x/admin", status: 404 },
      // Host never steers routing; one that is not host[:port] is refused.
      { target: "/api/users/1", host: "x/internal/admin#", status: 400 },
      { target: "/nothing-here", host: "127.0.0.1:8080/api/users", status: 400 },
      { target: "/nothing-here", host: "127.0.0.1:8080", status: 404 },
    ];
    for (const { target, host, status, body } of cases) {
      const raw = await sendRaw(
        gw.port,
        `GET ${target} HTTP/1.1\r\nHost: ${host ?? "gateway.test"}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(statusOf(raw), status, `${target} -> ${raw.split("\r\n")[0]}`);
      if (body !== undefined) assert.equal(bodyOf(raw), body, target);
    }
    for (const request of seen) {
      assert.ok(allowedHosts.has(request.host ?? ""), `upstream saw Host ${request.host}`);
      // No dot segment reaches an upstream; "..%2f" inside one segment stays confined to the
      // service that owns the normalised path.
      const segments = request.path.split("?")[0].split("/");
      assert.ok(segments.every((s) => s !== ".." && s !== "."), `upstream saw ${request.path}`);
      assert.ok(!request.path.includes("\\"), `upstream saw ${request.path}`);
    }
    // The spoofed Host went to X-Forwarded-Host, never to the connection target.
    assert.ok(seen.every((request) => request.host !== "evil.example"));
  } finally {
    await gw.close();
    await users.close();
    await admin.close();
  }
});

Deno.test("the public port exposes nothing of the admin API", async () => {
  const upstream = startUpstream(() => new Response("upstream"));
  const gw = await startTestGateway({
    services: { s: { prefix: "/s", upstreams: [upstream.origin] } },
  });
  try {
    for (const path of ["/admin/breakers", "/metrics", "/", "/s/../admin/breakers"]) {
      const response = await fetch(gw.url + path);
      assert.equal(response.status, 404, path);
      assert.equal(response.headers.get("x-breakwater-error"), "no_route", path);
      await response.body?.cancel();
    }
    const write = await fetch(`${gw.url}/admin/breakers/s`, {
      method: "POST",
      body: JSON.stringify({ action: "open" }),
    });
    assert.equal(write.status, 404);
    await write.body?.cancel();
    assert.equal(gw.gateway.breaker.view("s").state, "closed");
  } finally {
    await gw.close();
    await upstream.close();
  }
});
