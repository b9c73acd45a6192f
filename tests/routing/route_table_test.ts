import assert from "node:assert/strict";
import { buildRouteTable, ownsPath, upstreamPath } from "../../src/routing/route_table.ts";

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
