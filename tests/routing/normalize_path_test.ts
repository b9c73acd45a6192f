import assert from "node:assert/strict";
import {
  applyEscapedSlashes,
  type EscapedSlashes,
  normalizeTarget,
} from "../../src/routing/normalize_path.ts";
import { buildRouteTable, ownsPath, upstreamPath } from "../../src/routing/route_table.ts";
import { isValidHost, targetOfUrl } from "../../src/routing/request_target.ts";

function pathOf(target: string): string {
  const normalized = normalizeTarget(target);
  assert.ok(!("error" in normalized), `${target}: ${JSON.stringify(normalized)}`);
  return normalized.path;
}

Deno.test("normalizeTarget resolves plain, encoded, backslash and ;-parameter dot segments", () => {
  const cases: [string, string, string][] = [
    ["/api/users/7?x=1", "/api/users/7", "?x=1"],
    ["/api/users/../admin", "/api/admin", ""],
    ["/api/users/%2e%2e/admin", "/api/admin", ""],
    ["/api/users/%2E%2E/%2e%2E/admin", "/admin", ""],
    ["/api/users/.%2e/x", "/api/x", ""],
    ["/api\\users\\..\\admin", "/api/admin", ""],
    ["/api/users/./7", "/api/users/7", ""],
    ["/../../etc/passwd", "/etc/passwd", ""],
    ["//evil.example/x", "//evil.example/x", ""],
    ["/pub/..;/other/x", "/other/x", ""],
    ["/pub/..;jsessionid=1/other", "/other", ""],
    ["/pub/%2e%2e;x/other", "/other", ""],
    ["/pub/.;x/y", "/pub/y", ""],
    ["/pub/a;b=c/d", "/pub/a;b=c/d", ""],
    ["/file.json?a=b?c", "/file.json", "?a=b?c"],
  ];
  for (const [target, path, search] of cases) {
    const normalized = normalizeTarget(target);
    assert.ok(!("error" in normalized), target);
    assert.equal(normalized.path, path, target);
    assert.equal(normalized.search, search, target);
  }
});

Deno.test("doubly-encoded dots and slashes and non-absolute targets are refused", () => {
  for (const target of ["/a/%252e%252e/b", "/a/%252F/b", "/a/%255c", "*", "x/y"]) {
    assert.ok("error" in normalizeTarget(target), target);
  }
});

Deno.test("escapedSlashes: reject, decode and keep", () => {
  const encoded = ["/pub/..%2fother/x", "/pub/..%2Fother", "/pub/%5c..%5cother", "/pub/a%2Fb"];
  for (const target of encoded) {
    const normalized = normalizeTarget(target);
    assert.ok(!("error" in normalized) && normalized.escapedSlash, target);
    assert.ok("error" in applyEscapedSlashes(normalized.path, "reject"), target);
  }
  assert.deepEqual(applyEscapedSlashes(pathOf("/pub/..%2fother/x"), "decode"), {
    path: "/other/x",
  });
  assert.deepEqual(applyEscapedSlashes(pathOf("/pub/a%2Fb"), "decode"), { path: "/pub/a/b" });
  assert.deepEqual(applyEscapedSlashes(pathOf("/pub/a%2Fb"), "keep"), { path: "/pub/a%2Fb" });
  // keep still refuses a dot segment hidden behind an encoded slash.
  for (const target of ["/pub/..%2fother", "/pub/%2e%2e%2Fother", "/pub/x%5c.."]) {
    assert.ok("error" in applyEscapedSlashes(pathOf(target), "keep"), target);
  }
});

/** How common frameworks decode a path: %XX decoded, `\` as `/`, `;` parameters dropped. */
function asFrameworkSees(path: string): string {
  const decoded = decodeURIComponent(path.split("?")[0]).replaceAll("\\", "/");
  const segments: string[] = [];
  for (const raw of decoded.split("/")) {
    const segment = raw.split(";")[0];
    if (segment === "..") segments.pop();
    else if (segment !== ".") segments.push(segment);
  }
  return segments.join("/") || "/";
}

Deno.test("hostile targets: what the upstream receives stays under the prefix routed by", () => {
  const match = buildRouteTable([{ prefix: "/pub", target: "pub" }]);
  const dots = ["..", ".%2e", "%2e%2e", "%2E.", "..;x", "%2e%2e;a=b", "."];
  const slashes = ["/", "%2f", "%2F", "%5c", "%5C", "\\"];
  const targets: string[] = [];
  for (const dot of dots) {
    for (const slash of slashes) {
      targets.push(`/pub/${dot}${slash}other/x`, `/pub/a/${dot}${slash}${dot}${slash}other`);
      targets.push(`/pub${slash}${dot}${slash}other`);
    }
  }
  targets.push("/pub/%252e%252e/other", "/pub//../other", "/pub/./../other");
  for (const policy of ["reject", "decode", "keep"] as EscapedSlashes[]) {
    for (const target of targets) {
      const normalized = normalizeTarget(target);
      if ("error" in normalized) continue;
      let path = normalized.path;
      if (normalized.escapedSlash) {
        const decided = applyEscapedSlashes(path, policy);
        if ("error" in decided) continue;
        path = decided.path;
      }
      const owner = match(path);
      if (owner === null) continue;
      const forwarded = upstreamPath(path, owner.prefix, false);
      assert.ok(
        ownsPath("/pub", asFrameworkSees(forwarded)),
        `${policy} ${target} -> upstream sees ${asFrameworkSees(forwarded)}`,
      );
    }
  }
});

Deno.test("Host values: host[:port] only", () => {
  for (const good of ["gw", "gw:8080", "127.0.0.1", "[::1]:8080", "a-b.example.com", ""]) {
    assert.ok(isValidHost(good), good);
  }
  for (
    const bad of [
      "x/api/orders/admin#",
      "127.0.0.1:8080/api/users",
      "a b",
      "h:99999",
      "h:",
      "a@b",
      "[::1",
      "[::1::2]",
      "h:8x",
    ]
  ) {
    assert.ok(!isValidHost(bad), bad);
  }
});

Deno.test("targetOfUrl takes the target behind a validated authority", () => {
  assert.equal(targetOfUrl("http://gw:8080/api/users/7?x=1"), "/api/users/7?x=1");
  assert.equal(targetOfUrl("http://gw"), "/");
  assert.equal(targetOfUrl("http://gw?x"), "/?x");
});
