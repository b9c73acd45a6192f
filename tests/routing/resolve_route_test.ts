import assert from "node:assert/strict";
import { resolveRoute } from "../../src/routing/resolve_route.ts";
import { buildRouteTable } from "../../src/routing/route_table.ts";

function service(name: string, prefix: string, options: Record<string, unknown> = {}) {
  return {
    config: { name, prefix, stripPrefix: false, escapedSlashes: "reject" as const, ...options },
  };
}

const api = service("api", "/api", { stripPrefix: true });
const files = service("files", "/files", { escapedSlashes: "keep" });
const decoded = service("docs", "/docs", { escapedSlashes: "decode" });
const match = buildRouteTable(
  [api, files, decoded].map((s) => ({ prefix: s.config.prefix, target: s })),
);

function codeOf(result: object): string | null {
  return "code" in result ? String(result.code) : null;
}

Deno.test("resolveRoute: the normalised path routes; the prefix is stripped where configured", () => {
  assert.deepEqual(resolveRoute("/api/v1/../v2/x?q=1", "GET", match, "reject"), {
    target: api,
    path: "/api/v2/x",
    pathAndQuery: "/v2/x?q=1",
  });
  assert.deepEqual(resolveRoute("/files/a", "GET", match, "reject"), {
    target: files,
    path: "/files/a",
    pathAndQuery: "/files/a",
  });
});

Deno.test("resolveRoute: no owner, a bad target, and each escaped-slash policy", () => {
  assert.deepEqual(resolveRoute("/nope", "PUT", match, "reject"), {
    code: "no_route",
    detail: "PUT /nope",
    service: null,
  });
  assert.equal(codeOf(resolveRoute("*", "OPTIONS", match, "reject")), "bad_request");
  const rejected = resolveRoute("/api/a%2Fb", "GET", match, "decode");
  assert.ok("code" in rejected && rejected.code === "bad_request" && rejected.service === "api");
  const kept = resolveRoute("/files/a%2Fb", "GET", match, "reject");
  assert.ok("target" in kept && kept.pathAndQuery === "/files/a%2Fb");
  // A decoded path is matched again: it may leave its first owner.
  const moved = resolveRoute("/docs/..%2Fapi%2Fz", "GET", match, "reject");
  assert.ok("target" in moved && moved.target === api && moved.pathAndQuery === "/z");
  // No owner before decoding: the gateway-wide default decides.
  const orphan = resolveRoute("/x%2F..%2Fapi", "GET", match, "decode");
  assert.ok("target" in orphan && orphan.target === api, JSON.stringify(orphan));
  assert.equal(
    (resolveRoute("/x%2Fy", "GET", match, "reject") as { code: string }).code,
    "bad_request",
  );
});
