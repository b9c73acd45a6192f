import assert from "node:assert/strict";
import { blameAttempt } from "../../src/proxy/blame.ts";
import { ClientError } from "../../src/proxy/client_error.ts";
import { UpstreamError } from "../../src/proxy/upstream_client.ts";

const base = {
  status: null,
  error: null,
  durationMs: 7,
  clientGone: false,
  waitingOnClient: false,
};

Deno.test("blame: the upstream's own answers and failures count", () => {
  assert.deepEqual(blameAttempt({ ...base, status: 503 }).outcome, { status: 503, durationMs: 7 });
  assert.equal(blameAttempt({ ...base, status: 200 }).source, "upstream");
  const refused = blameAttempt({
    ...base,
    error: new UpstreamError("unreachable", "ECONNREFUSED"),
  });
  assert.deepEqual(refused.outcome, { error: "unreachable", durationMs: 7 });
  assert.equal(refused.answer, "upstream_unreachable");
  const timedOut = blameAttempt({ ...base, error: new UpstreamError("timeout", "late") });
  assert.equal(timedOut.source, "upstream");
  assert.equal(timedOut.answer, "upstream_timeout");
});

Deno.test("blame: whatever the client caused is answered 4xx and never recorded", () => {
  const noVerdict = { error: "aborted", durationMs: 0 };
  const cases = [
    {
      facts: { ...base, error: new ClientError("bad_request", "broken body") },
      answer: "bad_request",
    },
    {
      // Wrapped a few causes deep, as fetch and streams do.
      facts: {
        ...base,
        error: new TypeError("x", { cause: new ClientError("body_too_large", "big") }),
      },
      answer: "body_too_large",
    },
    {
      facts: { ...base, error: new UpstreamError("unreachable", "reset"), clientGone: true },
      answer: null,
    },
    { facts: { ...base, error: new UpstreamError("aborted", "gone") }, answer: null },
    {
      facts: { ...base, error: new UpstreamError("timeout", "late"), waitingOnClient: true },
      answer: "request_timeout",
    },
    { facts: { ...base, status: 501 }, answer: null },
    { facts: { ...base, status: 505 }, answer: null },
  ];
  for (const { facts, answer } of cases) {
    const verdict = blameAttempt(facts);
    assert.equal(verdict.source, "client", verdict.message);
    assert.equal(verdict.answer, answer, verdict.message);
    assert.deepEqual(verdict.outcome, noVerdict, verdict.message);
  }
});

Deno.test("blame: an exception of the gateway's own is not evidence against the upstream", () => {
  const verdict = blameAttempt({ ...base, error: new TypeError("Method is forbidden") });
  assert.equal(verdict.source, "gateway");
  assert.equal(verdict.outcome.error, "aborted");
  assert.equal(verdict.answer, "upstream_unreachable");
});
