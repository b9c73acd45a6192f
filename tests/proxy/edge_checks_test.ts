import assert from "node:assert/strict";
import { checkDeclaredLength, checkRequest } from "../../src/proxy/edge_checks.ts";

const host = { host: "gw.example:8080" };

Deno.test("edge checks: methods", () => {
  for (const method of ["TRACE", "TRACK", "CONNECT", "trace", "Connect"]) {
    assert.equal(checkRequest(method, new Headers(host), 10)?.code, "method_not_allowed", method);
  }
  for (const method of ["GET", "get", "PROPFIND", "PURGE", "M-SEARCH"]) {
    assert.equal(checkRequest(method, new Headers(host), 10), null, method);
  }
  for (const method of ["G ET", "GET/", "", "GÉT"]) {
    assert.equal(checkRequest(method, new Headers(host), 10)?.code, "bad_request", method);
  }
});

Deno.test("edge checks: Host and framing", () => {
  assert.equal(
    checkRequest("GET", new Headers({ host: "x/api/orders/admin#" }), 10)?.code,
    "bad_request",
  );
  assert.equal(checkRequest("GET", new Headers(), 10), null); // HTTP/1.0 may omit Host
  const repeated = new Headers(host);
  repeated.append("content-length", "5");
  repeated.append("content-length", "5");
  assert.equal(checkRequest("POST", repeated, 10)?.code, "bad_request");
  for (const value of ["+5", "5.0", "0x5", " 5x", "-1", "1e3"]) {
    assert.equal(
      checkRequest("POST", new Headers({ ...host, "content-length": value }), 10)?.code,
      "bad_request",
      value,
    );
  }
  const both = new Headers({ ...host, "content-length": "5", "transfer-encoding": "chunked" });
  assert.equal(checkRequest("POST", both, 10)?.code, "bad_request");
  assert.equal(
    checkRequest("POST", new Headers({ ...host, "content-length": "11" }), 10)?.code,
    "body_too_large",
  );
  assert.equal(checkRequest("POST", new Headers({ ...host, "content-length": "10" }), 10), null);
});

Deno.test("edge checks: the declared length alone, for requests the own server parsed", () => {
  assert.equal(
    checkDeclaredLength(new Headers({ "content-length": "11" }), 10)?.code,
    "body_too_large",
  );
  assert.equal(checkDeclaredLength(new Headers({ "content-length": "10" }), 10), null);
  assert.equal(checkDeclaredLength(new Headers(), 10), null);
});
