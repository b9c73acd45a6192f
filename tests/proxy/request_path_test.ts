/**
 * The request path phase by phase, against a scripted upstream client, a breaker that counts
 * its calls, a fake clock and a deadline scheduler the test fires by hand. No sockets and no
 * timers: the whole file runs in well under a second.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { Admission, AttemptOutcome } from "../../src/breaker/types.ts";
import { parseConfig } from "../../src/config/schema.ts";
import { buildService } from "../../src/gateway/build_service.ts";
import type { AdmissionControl } from "../../src/proxy/admission.ts";
import { ClientError } from "../../src/proxy/client_error.ts";
import type { DeadlineScheduler } from "../../src/proxy/deadlines.ts";
import { createLimiter } from "../../src/proxy/limiter.ts";
import {
  createRequestPath,
  type RequestPath,
  type ServedRequest,
} from "../../src/proxy/request_path.ts";
import {
  type UpstreamClient,
  UpstreamError,
  type UpstreamRequest,
} from "../../src/proxy/upstream_client.ts";
import { buildRouteTable } from "../../src/routing/route_table.ts";
import type { ServerSpanHandle } from "../../src/telemetry/tracing.ts";

const ORIGIN = "http://upstream.test:8080";
const NO_VERDICT: AttemptOutcome = { error: "aborted", durationMs: 0 };

/** What the scripted client does on its n-th call. */
type Step = (request: UpstreamRequest, clock: Clock) => Response | Promise<Response>;

interface Clock {
  ms: number;
}

/** A client that plays `steps` in order (the last one repeats) and keeps every request. */
function scriptedClient(steps: Step[], clock: Clock) {
  const sent: UpstreamRequest[] = [];
  const client: UpstreamClient = {
    send(request) {
      sent.push(request);
      const step = steps[Math.min(sent.length, steps.length) - 1];
      return Promise.resolve().then(() => step(request, clock));
    },
    close() {},
  };
  return { client, sent };
}

/** A breaker that admits as told and keeps every recorded outcome. */
function countingBreaker(admission: Admission) {
  const records: AttemptOutcome[] = [];
  const breaker: AdmissionControl = {
    admit: () => admission,
    record: (_service, _admission, outcome) => records.push(outcome),
  };
  return { breaker, records };
}

/** Deadlines on the fake clock, fired by {@link FakeDeadlines.fireDue}. */
interface FakeDeadlines extends DeadlineScheduler {
  fireDue(nowMs: number): void;
}

function fakeDeadlines(): FakeDeadlines {
  const entries = new Set<{ atMs: number; fire: () => void }>();
  return {
    schedule(atMs, fire) {
      const entry = { atMs, fire };
      entries.add(entry);
      return () => entries.delete(entry);
    },
    pending: () => entries.size,
    close: () => entries.clear(),
    fireDue(nowMs) {
      for (const entry of [...entries]) {
        if (entry.atMs > nowMs) continue;
        entries.delete(entry);
        entry.fire();
      }
    },
  };
}

interface Harness {
  path: RequestPath;
  sent: UpstreamRequest[];
  records: AttemptOutcome[];
  served: ServedRequest[];
  rejected: string[];
  retries: number;
  refusedRetries: string[];
  clock: Clock;
  deadlines: FakeDeadlines;
  service: ReturnType<typeof buildService>;
  draining: { value: boolean };
}

interface HarnessOptions {
  steps?: Step[];
  service?: Record<string, unknown>;
  admission?: Admission;
  maxBodyBytes?: number;
  tracing?: { enabled: boolean; startServer: () => ServerSpanHandle | null };
  /** Epoch milliseconds for `Retry-After` dates. */
  wallNow?: () => number;
}

const ADMITTED: Admission = { allowed: true, probe: false, generation: 1 };
const PROBE: Admission = { allowed: true, probe: true, generation: 1 };

function harness(options: HarnessOptions = {}): Harness {
  const clock: Clock = { ms: 1000 };
  const { client, sent } = scriptedClient(options.steps ?? [() => new Response("ok")], clock);
  const config = parseConfig({
    limits: { maxBodyBytes: options.maxBodyBytes ?? 1024 },
    services: { svc: { prefix: "/api", upstreams: [ORIGIN], ...options.service } },
  });
  const now = () => clock.ms;
  const service = buildService(config.services.svc, { client, now });
  const { breaker, records } = countingBreaker(options.admission ?? ADMITTED);
  const deadlines = fakeDeadlines();
  const served: ServedRequest[] = [];
  const rejected: string[] = [];
  const refusedRetries: string[] = [];
  const draining = { value: false };
  const h = { retries: 0 } as Harness;
  const path = createRequestPath({
    match: buildRouteTable([{ prefix: "/api", target: service }]),
    escapedSlashes: "reject",
    maxBodyBytes: config.limits.maxBodyBytes,
    breaker,
    globalLimiter: createLimiter({ limit: 100, maxPending: 0, queueTimeoutMs: 1000 }),
    deadlines,
    now,
    wallNow: options.wallNow,
    random: () => 0.5,
    draining: () => draining.value,
    observer: {
      clientAttempt: () => {},
      rejected: (_service, code) => rejected.push(code),
      retry: () => h.retries++,
      retryRefused: (_service, reason) => refusedRetries.push(reason),
    },
    tracing: options.tracing ?? { enabled: false, startServer: () => null },
    onServed: (record) => served.push(record),
  });
  return Object.assign(h, {
    path,
    sent,
    records,
    served,
    rejected,
    refusedRetries,
    clock,
    deadlines,
    service,
    draining,
  });
}

function request(target: string, init: RequestInit = {}): Request {
  return new Request(`http://gw.test${target}`, init);
}

async function handle(h: Harness, raw: Request, facts = {}): Promise<Response> {
  return await h.path.handle({ raw, requestId: "req-1", facts });
}

async function problemCode(response: Response): Promise<string | null> {
  await response.body?.cancel();
  return response.headers.get("x-breakwater-error");
}

Deno.test("request path: an upstream answer streams back, re-headed, and is recorded", async () => {
  const h = harness({
    steps: [() => new Response("hello", { status: 201, headers: { connection: "x-hop" } })],
  });
  const response = await handle(h, request("/api/users?page=2"));
  assert.equal(response.status, 201);
  assert.equal(response.headers.get("x-request-id"), "req-1");
  assert.equal(await response.text(), "hello");
  assert.equal(h.sent[0].pathAndQuery, "/api/users?page=2");
  assert.equal(h.sent[0].origin, ORIGIN);
  assert.deepEqual(h.records, [{ status: 201, durationMs: 0 }]);
  assert.equal(h.served[0].status, 201);
  assert.equal(h.served[0].upstream, ORIGIN);
  assert.equal(h.served[0].path, "/api/users");
  assert.equal(h.served[0].error, undefined);
  // The slots were held until the body was read to its end.
  assert.equal(h.service.limiter.active(), 0);
  assert.equal(h.deadlines.pending(), 0);
});

Deno.test("request path: slots are held while the body streams, released at its end", async () => {
  const h = harness({ steps: [() => new Response(new Blob(["a", "b"]).stream())] });
  const response = await handle(h, request("/api/x"));
  assert.equal(h.service.limiter.active(), 1);
  assert.equal(h.path.inFlight(), 0, "in flight ends with the response head");
  await response.text();
  assert.equal(h.service.limiter.active(), 0);
});

Deno.test("request path: an open breaker answers 503 breaker_open with Retry-After", async () => {
  const h = harness({ admission: { allowed: false, retryAfterMs: 2500, state: "open" } });
  const response = await handle(h, request("/api/x"));
  assert.equal(response.status, 503);
  assert.equal(response.headers.get("retry-after"), "3");
  assert.equal(await problemCode(response), "breaker_open");
  assert.equal(h.sent.length, 0);
  assert.deepEqual(h.records, []);
  assert.deepEqual(h.rejected, ["breaker_open"]);
  assert.equal(h.served[0].error, "breaker_open");
});

Deno.test("request path: no free slot answers 503 pool_saturated and hands the probe back", async () => {
  const h = harness({ admission: PROBE, service: { pool: { maxConnections: 1, maxPending: 0 } } });
  const held = h.service.limiter.acquire();
  const response = await handle(h, request("/api/x"));
  assert.equal(response.status, 503);
  assert.equal(await problemCode(response), "pool_saturated");
  assert.deepEqual(h.records, [NO_VERDICT]);
  assert.equal(h.sent.length, 0);
  (held as () => void)();
});

Deno.test("request path: a client gone while queued gets no answer and hands the probe back", async () => {
  const h = harness({
    admission: PROBE,
    service: { pool: { maxConnections: 1, maxPending: 1, queueTimeoutMs: 60_000 } },
  });
  const held = h.service.limiter.acquire() as () => void;
  const controller = new AbortController();
  const answered = handle(h, request("/api/x", { signal: controller.signal }));
  controller.abort();
  const response = await answered;
  assert.equal(response.status, 499);
  assert.deepEqual(h.records, [NO_VERDICT]);
  assert.deepEqual(h.rejected, []);
  held();
});

Deno.test("request path: a body the client breaks off is a 400 and hands the probe back", async () => {
  const h = harness({ service: { retry: { attempts: 2 } } });
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(3));
      controller.error(new Error("connection reset"));
    },
  });
  // A probe is never retried, so its body streams: the client sees the broken body as the
  // request's, and blame makes it the client's fault.
  const steps: Step[] = [async (sent) => {
    await new Response(sent.body as ReadableStream).arrayBuffer();
    return new Response("unreachable");
  }];
  const streamed = harness({ admission: PROBE, steps });
  const response = await handle(streamed, request("/api/x", { method: "PUT", body }));
  assert.equal(response.status, 400);
  assert.equal(await problemCode(response), "bad_request");
  assert.deepEqual(streamed.records, [NO_VERDICT]);

  // A buffered body (retries possible) that breaks never reaches the client at all.
  const broken = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(3));
      controller.error(new Error("connection reset"));
    },
  });
  const buffered = await handle(
    h,
    request("/api/x", { method: "PUT", body: broken, headers: { "content-length": "10" } }),
  );
  assert.equal(buffered.status, 400);
  await buffered.body?.cancel();
  assert.equal(h.sent.length, 0);
  assert.deepEqual(h.records, [NO_VERDICT]);
});

Deno.test("request path: an exception inside the send phase still hands the probe back", async () => {
  const failingSpan = {
    traceId: "0".repeat(32),
    spanId: "0".repeat(16),
    sampled: true,
    setRoute() {},
    startClient(): never {
      throw new Error("tracing broke");
    },
    end() {},
  };
  const h = harness({
    admission: PROBE,
    tracing: { enabled: true, startServer: () => failingSpan },
  });
  await assert.rejects(handle(h, request("/api/x")), /tracing broke/);
  assert.deepEqual(h.records, [NO_VERDICT]);
  assert.equal(h.service.limiter.active(), 0, "slots released");
  assert.equal(h.deadlines.pending(), 0, "deadline cancelled");
});

Deno.test("request path: retries inside the budget, every attempt recorded", async () => {
  const h = harness({
    service: { retry: { attempts: 2, baseDelayMs: 0 } },
    steps: [
      () => new Response("busy", { status: 503 }),
      () => {
        throw new UpstreamError("unreachable", "ECONNREFUSED");
      },
      () => new Response("ok"),
    ],
  });
  const response = await handle(h, request("/api/x"));
  assert.equal(response.status, 200);
  assert.equal(await response.text(), "ok");
  assert.equal(h.sent.length, 3);
  assert.equal(h.retries, 2);
  assert.deepEqual(h.records, [
    { status: 503, durationMs: 0 },
    { error: "unreachable", durationMs: 0 },
    { status: 200, durationMs: 0 },
  ]);
});

Deno.test("request path: a spent budget or a near deadline refuses the retry", async () => {
  const budgetless = harness({
    service: { retry: { attempts: 3, baseDelayMs: 0, budgetPercent: 0, minRetriesPerSecond: 0 } },
    steps: [() => new Response("busy", { status: 503 })],
  });
  const spent = await handle(budgetless, request("/api/x"));
  assert.equal(spent.status, 503, "the upstream's own 503 is passed on");
  await spent.body?.cancel();
  assert.equal(budgetless.sent.length, 1);
  assert.deepEqual(budgetless.refusedRetries, ["budget"]);

  // Retry-After asks for 2 s; 100 ms of timeoutMs are left after the first attempt.
  const late = harness({
    service: { timeoutMs: 1000, retry: { attempts: 3, baseDelayMs: 0 } },
    steps: [(_request, clock) => {
      clock.ms += 900;
      return new Response("busy", { status: 503, headers: { "retry-after": "2" } });
    }],
  });
  const refused = await handle(late, request("/api/x"));
  assert.equal(refused.status, 503);
  await refused.body?.cancel();
  assert.equal(late.sent.length, 1);
  assert.deepEqual(late.refusedRetries, ["deadline"]);
});

Deno.test("request path: a Retry-After date is read against the wall clock passed in", async () => {
  // A manual wall clock in 2001: the dates below are long past on the machine's own clock, so
  // reading them against Date.now would make every wait 0 and retry at once.
  const wallMs = Date.parse("Mon, 01 Jan 2001 00:00:00 GMT");
  const answer = (retryAfter: string) => () =>
    new Response("busy", { status: 503, headers: { "retry-after": retryAfter } });
  // 2 s after the wall clock, with 1 s of timeoutMs: the wait would pass the deadline.
  const later = harness({
    service: { timeoutMs: 1000, retry: { attempts: 1, baseDelayMs: 0 } },
    steps: [answer("Mon, 01 Jan 2001 00:00:02 GMT"), () => new Response("ok")],
    wallNow: () => wallMs,
  });
  const refused = await handle(later, request("/api/x"));
  assert.equal(refused.status, 503);
  await refused.body?.cancel();
  assert.equal(later.sent.length, 1);
  assert.deepEqual(later.refusedRetries, ["deadline"]);

  // A date the wall clock has reached: no wait, the retry goes at once.
  const now = harness({
    service: { timeoutMs: 1000, retry: { attempts: 1, baseDelayMs: 0 } },
    steps: [answer("Mon, 01 Jan 2001 00:00:00 GMT"), () => new Response("ok")],
    wallNow: () => wallMs,
  });
  const retried = await handle(now, request("/api/x"));
  assert.equal(retried.status, 200);
  await retried.body?.cancel();
  assert.equal(now.sent.length, 2);
  assert.deepEqual(now.refusedRetries, []);
});

Deno.test("request path: only requests safe to repeat are retried, and never a probe", async () => {
  const steps: Step[] = [() => new Response("busy", { status: 503 }), () => new Response("ok")];
  const service = { retry: { attempts: 1, baseDelayMs: 0 } };
  const post = harness({ service, steps });
  const once = await handle(post, request("/api/x", { method: "POST", body: "x" }));
  assert.equal(once.status, 503);
  await once.body?.cancel();
  assert.equal(post.sent.length, 1);

  const keyed = harness({ service, steps });
  const twice = await handle(
    keyed,
    request("/api/x", {
      method: "POST",
      body: "x",
      headers: { "idempotency-key": "k1", "content-length": "1" },
    }),
  );
  assert.equal(twice.status, 200);
  await twice.body?.cancel();
  assert.equal(keyed.sent.length, 2);
  assert.ok(keyed.sent[1].body instanceof Uint8Array, "the buffered body is sent again");

  const probe = harness({ service, steps, admission: PROBE });
  const single = await handle(probe, request("/api/x"));
  assert.equal(single.status, 503);
  await single.body?.cancel();
  assert.equal(probe.sent.length, 1);
});

Deno.test("request path: blame of each failure kind decides answer and record", async () => {
  const cases: {
    name: string;
    step: Step;
    status: number;
    code: string | null;
    record: AttemptOutcome;
  }[] = [
    {
      name: "refused connection",
      step: () => {
        throw new UpstreamError("unreachable", "ECONNREFUSED");
      },
      status: 502,
      code: "upstream_unreachable",
      record: { error: "unreachable", durationMs: 0 },
    },
    {
      name: "upstream timeout",
      step: () => {
        throw new UpstreamError("timeout", "no head");
      },
      status: 504,
      code: "upstream_timeout",
      record: { error: "timeout", durationMs: 0 },
    },
    {
      name: "request the client made wrong",
      step: () => {
        throw new ClientError("bad_request", "invalid header value");
      },
      status: 400,
      code: "bad_request",
      record: NO_VERDICT,
    },
    {
      name: "a defect of the gateway",
      step: () => {
        throw new TypeError("undefined is not a function");
      },
      status: 502,
      code: "upstream_unreachable",
      record: NO_VERDICT,
    },
    {
      name: "501 describes the request",
      step: () => new Response(null, { status: 501 }),
      status: 501,
      code: null,
      record: NO_VERDICT,
    },
    {
      name: "an upstream 500 is passed on and counted",
      step: () => new Response(null, { status: 500 }),
      status: 500,
      code: null,
      record: { status: 500, durationMs: 0 },
    },
  ];
  for (const { name, step, status, code, record } of cases) {
    const h = harness({ steps: [step] });
    const response = await handle(h, request("/api/x"));
    assert.equal(response.status, status, name);
    assert.equal(await problemCode(response), code, name);
    assert.deepEqual(h.records, [record], name);
  }
});

Deno.test("request path: the deadline while the upstream owes the head is a 504 against it", async () => {
  const h = harness({
    service: { timeoutMs: 500 },
    steps: [(sent, clock) => {
      clock.ms += 500;
      h.deadlines.fireDue(clock.ms);
      assert.ok(sent.signal.aborted);
      throw new UpstreamError("timeout", "aborted at the deadline");
    }],
  });
  const response = await handle(h, request("/api/x"));
  assert.equal(response.status, 504);
  assert.equal(await problemCode(response), "upstream_timeout");
  assert.deepEqual(h.records, [{ error: "timeout", durationMs: 500 }]);
});

Deno.test("request path: the deadline while the body waits on the client is a 408, not counted", async () => {
  const stalled = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(new Uint8Array(2));
    },
  });
  const h = harness({
    service: { timeoutMs: 500 },
    steps: [async (sent, clock) => {
      const reader = (sent.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      const next = reader.read(); // the client sends nothing more
      // Let the body's pull start and wait on the client (microtasks only, no time passes).
      await new Promise((resolve) => setTimeout(resolve, 0));
      clock.ms += 500;
      h.deadlines.fireDue(clock.ms);
      reader.cancel().catch(() => {});
      await next.catch(() => {});
      throw new UpstreamError("timeout", "aborted at the deadline");
    }],
  });
  const response = await handle(h, request("/api/x", { method: "POST", body: stalled }));
  assert.equal(response.status, 408);
  assert.equal(await problemCode(response), "request_timeout");
  assert.deepEqual(h.records, [NO_VERDICT]);
});

Deno.test("request path: the client going away mid-attempt gets no answer and no verdict", async () => {
  const controller = new AbortController();
  const h = harness({
    steps: [(sent) => {
      controller.abort();
      assert.ok(sent.signal.aborted, "the attempt's signal follows the client");
      throw new UpstreamError("aborted", "the client went away");
    }],
  });
  const response = await handle(h, request("/api/x", { signal: controller.signal }));
  assert.equal(response.status, 499);
  assert.deepEqual(h.records, [NO_VERDICT]);
  assert.equal(h.served[0].upstream, ORIGIN);
});

Deno.test("request path: bodies over maxBodyBytes are 413, declared or streamed", async () => {
  const declared = harness({ maxBodyBytes: 8 });
  const early = await handle(
    declared,
    request("/api/x", { method: "POST", body: "x".repeat(9), headers: { "content-length": "9" } }),
  );
  assert.equal(early.status, 413);
  assert.equal(await problemCode(early), "body_too_large");
  assert.equal(declared.sent.length, 0, "refused at the edge");
  assert.deepEqual(declared.records, [], "before admission");

  const streamed = harness({
    maxBodyBytes: 8,
    steps: [async (sent) => {
      await new Response(sent.body as ReadableStream).arrayBuffer();
      return new Response("unreachable");
    }],
  });
  const late = await handle(streamed, request("/api/x", { method: "POST", body: "x".repeat(9) }));
  assert.equal(late.status, 413);
  assert.equal(await problemCode(late), "body_too_large");
  assert.deepEqual(streamed.records, [NO_VERDICT]);
});

Deno.test("request path: the route phase answers what no service owns or may take", async () => {
  const h = harness();
  const cases: [Request, number, string][] = [
    [request("/elsewhere"), 404, "no_route"],
    [request("/api/a%2Fb"), 400, "bad_request"],
    [
      request("/api/x", {
        method: "OPTIONS",
        headers: { "transfer-encoding": "chunked", "content-length": "1" },
      }),
      400,
      "bad_request",
    ],
  ];
  for (const [raw, status, code] of cases) {
    const response = await handle(h, raw);
    assert.equal(response.status, status, raw.url);
    assert.equal(await problemCode(response), code, raw.url);
  }
  const trace = await handle(h, request("/api/x"), { method: "TRACE" });
  assert.equal(trace.status, 405);
  await trace.body?.cancel();
  // The target as sent wins over the URL the server built from Host.
  const routed = await handle(h, request("/elsewhere"), { target: "/api/../api/y" });
  assert.equal(routed.status, 200);
  await routed.body?.cancel();
  assert.equal(h.sent.at(-1)?.pathAndQuery, "/api/y");
  assert.equal(h.sent.length, 1);
  assert.deepEqual(h.rejected, ["no_route", "bad_request", "bad_request", "method_not_allowed"]);
});

Deno.test("request path: while draining every request is answered 503 draining, closing", async () => {
  const h = harness();
  h.draining.value = true;
  const response = await handle(h, request("/api/x"));
  assert.equal(response.status, 503);
  assert.equal(response.headers.get("connection"), "close");
  assert.equal(response.headers.get("retry-after"), "1");
  assert.equal(await problemCode(response), "draining");
  assert.equal(h.sent.length, 0);
});
