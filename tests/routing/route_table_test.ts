import assert from "node:assert/strict";
import { buildRouteTable, ownsPath, upstreamPath } from "../../src/routing/route_table.ts";
import { normalizeTarget } from "../../src/routing/normalize_path.ts";

Deno.test("longest prefix wins, on segment boundaries", () => {
  const match = buildRouteTable([
    { prefix: "/api", target: "api" },
    { prefix: "/api/users", target: "users" },
    { prefix: "/", target: "root" },
  ]);
  const cases: [string, string | undefined][] = [
    ["/api/users", "users"],
    ["/api/users/", "users"],
    ["/api/users/7/orders", "users"],
    ["/api/usersX", "api"],
    ["/api", "api"],
    ["/apix", "root"],
    ["/", "root"],
  ];
  for (const [path, expected] of cases) assert.equal(match(path)?.target, expected, path);
});

Deno.test("no route without a catch-all", () => {
  const match = buildRouteTable([{ prefix: "/api/users", target: "users" }]);
  assert.equal(match("/api/user"), null);
  assert.equal(match("/admin"), null);
  assert.equal(match("/api/usersX/1"), null);
});

Deno.test("ownsPath is segment aware", () => {
  assert.equal(ownsPath("/a", "/a"), true);
  assert.equal(ownsPath("/a", "/a/b"), true);
  assert.equal(ownsPath("/a", "/ab"), false);
  assert.equal(ownsPath("/", "/anything"), true);
});

Deno.test("upstreamPath strips the prefix only when asked", () => {
  assert.equal(upstreamPath("/api/users/7", "/api/users", false), "/api/users/7");
  assert.equal(upstreamPath("/api/users/7", "/api/users", true), "/7");
  assert.equal(upstreamPath("/api/users", "/api/users", true), "/");
  assert.equal(upstreamPath("/x", "/", true), "/x");
});

Deno.test("normalizeTarget resolves plain, encoded and backslash dot segments", () => {
  const cases: [string, string, string][] = [
    ["http://gw/api/users/7?x=1", "/api/users/7", "?x=1"],
    ["http://gw/api/users/../admin", "/api/admin", ""],
    ["http://gw/api/users/%2e%2e/admin", "/api/admin", ""],
    ["http://gw/api/users/%2E%2E/%2e%2E/admin", "/admin", ""],
    ["http://gw/api/users/.%2e/x", "/api/x", ""],
    ["http://gw/api\\users\\..\\admin", "/api/admin", ""],
    ["http://gw/api/users/./7", "/api/users/7", ""],
    ["http://gw/../../etc/passwd", "/etc/passwd", ""],
    ["http://evil.example/abs?q", "/abs", "?q"],
    ["http://gw//evil.example/x", "//evil.example/x", ""],
    ["http://gw/api/users/..%2fadmin", "/api/users/..%2fadmin", ""],
    ["http://gw/api/users/%252e%252e/admin", "/api/users/%252e%252e/admin", ""],
    ["http://gw/file.json?a=b?c", "/file.json", "?a=b?c"],
    ["http://gw", "/", ""],
  ];
  for (const [url, path, search] of cases) {
    assert.deepEqual(normalizeTarget(url), { path, search }, url);
  }
});

Deno.test("a normalized path never escapes the service through its prefix", () => {
  const match = buildRouteTable([
    { prefix: "/api/users", target: "users" },
    { prefix: "/api/billing", target: "billing" },
  ]);
  for (
    const url of [
      "http://gw/api/users/../billing/x",
      "http://gw/api/users/%2e%2e/billing/x",
      "http://gw/api/users\\..\\billing/x",
    ]
  ) {
    // Resolved first, so the request belongs to billing by its real path, not to users.
    assert.equal(match(normalizeTarget(url).path)?.target, "billing", url);
  }
  assert.equal(match(normalizeTarget("http://gw/api/users/..%2fbilling").path)?.target, "users");
});
