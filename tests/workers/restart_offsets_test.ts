/**
 * A restarted worker's counters start from zero; the instance's merged `/metrics` carries its
 * slot's earlier counts, so no summed counter ever decreases, and gauges stay as reported.
 * The texts are shaped like a worker's real exposition (OpenTelemetry's Prometheus serializer).
 */
import assert from "node:assert/strict";
import { createExpositionMerger, parseExposition } from "../../src/workers/metrics_merge.ts";
import { isCounterSample } from "../../src/workers/restart_offsets.ts";

const LABELS = 'breakwater_service="api",otel_scope_name="breakwater",otel_scope_version="0.1.0"';
const ROUTE =
  'http_request_method="GET",http_response_status_code="200",breakwater_service="api",' +
  'url_scheme="http",http_route="/api",otel_scope_name="breakwater",otel_scope_version="0.1.0"';

const MAIN = `# HELP target_info Target metadata
# TYPE target_info gauge
target_info{service_name="breakwater"} 1
# HELP breakwater_breaker_state Breaker state
# TYPE breakwater_breaker_state gauge
breakwater_breaker_state{${LABELS}} 0
`;

interface WorkerCounts {
  retries: number;
  poolActive: number;
  /** Requests under 10 ms, and all. */
  fast: number;
  all: number;
  sumSeconds: number;
}

/** A worker's text; without `all`, no request reached it yet (no duration series). */
function workerText(counts: Partial<WorkerCounts>): string {
  let text = `# HELP breakwater_retries_total Upstream attempts that were retries
# TYPE breakwater_retries_total counter
breakwater_retries_total{${LABELS}} ${counts.retries ?? 0}
# HELP breakwater_pool_active Requests in flight to the service's upstreams
# TYPE breakwater_pool_active gauge
breakwater_pool_active{${LABELS}} ${counts.poolActive ?? 0}
`;
  if (counts.all !== undefined) {
    text += `# HELP http_server_request_duration_seconds Duration of requests on the public port
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_count{${ROUTE}} ${counts.all}
http_server_request_duration_seconds_sum{${ROUTE}} ${counts.sumSeconds}
http_server_request_duration_seconds_bucket{${ROUTE},le="0.01"} ${counts.fast}
http_server_request_duration_seconds_bucket{${ROUTE},le="+Inf"} ${counts.all}
`;
  }
  return text;
}

function valueOf(text: string, family: string, sample: string): number | undefined {
  const found = parseExposition(text).find((each) => each.name === family);
  return found?.samples.get(sample);
}

const RETRIES = `breakwater_retries_total{${LABELS}}`;
const POOL = `breakwater_pool_active{${LABELS}}`;
const DURATION = "http_server_request_duration_seconds";
const COUNT = `${DURATION}_count{${ROUTE}}`;
const SUM = `${DURATION}_sum{${ROUTE}}`;
const FAST = `${DURATION}_bucket{${ROUTE},le="0.01"}`;
const INF = `${DURATION}_bucket{${ROUTE},le="+Inf"}`;

Deno.test("metrics merge: a restarted worker's counters continue from its slot's last values", () => {
  const merge = createExpositionMerger();
  const w1 = workerText({ retries: 1, poolActive: 1, fast: 4, all: 5, sumSeconds: 0.03 });
  const before = merge(MAIN, [
    {
      slot: 0,
      incarnation: 0,
      text: workerText({ retries: 2, poolActive: 3, fast: 6, all: 7, sumSeconds: 0.05 }),
    },
    { slot: 1, incarnation: 0, text: w1 },
  ]);
  assert.equal(valueOf(before, DURATION, COUNT), 12);
  assert.equal(valueOf(before, "breakwater_retries_total", RETRIES), 3);

  // Worker 0 crashed; the new one has served nothing yet: no duration series at all.
  const restarted = merge(MAIN, [
    { slot: 0, incarnation: 1, text: workerText({ retries: 0, poolActive: 0 }) },
    { slot: 1, incarnation: 0, text: w1 },
  ]);
  assert.equal(valueOf(restarted, DURATION, COUNT), 12, "not 5: the first worker's 7 carry on");
  assert.equal(valueOf(restarted, DURATION, SUM), 0.08);
  assert.equal(valueOf(restarted, DURATION, FAST), 10);
  assert.equal(valueOf(restarted, DURATION, INF), 12);
  assert.equal(valueOf(restarted, "breakwater_retries_total", RETRIES), 3);
  assert.equal(valueOf(restarted, "breakwater_pool_active", POOL), 1, "a gauge is as reported now");
  assert.equal(restarted.match(new RegExp(`^# TYPE ${DURATION} histogram$`, "gm"))?.length, 1);

  // It serves two; then it restarts again and its third incarnation serves one.
  const served = merge(MAIN, [
    {
      slot: 0,
      incarnation: 1,
      text: workerText({ retries: 1, poolActive: 2, fast: 2, all: 2, sumSeconds: 0.002 }),
    },
    { slot: 1, incarnation: 0, text: w1 },
  ]);
  assert.equal(valueOf(served, DURATION, COUNT), 14);
  assert.equal(valueOf(served, "breakwater_retries_total", RETRIES), 4);
  assert.equal(valueOf(served, "breakwater_pool_active", POOL), 3);
  const again = merge(MAIN, [
    {
      slot: 0,
      incarnation: 2,
      text: workerText({ retries: 0, poolActive: 0, fast: 1, all: 1, sumSeconds: 0.001 }),
    },
    { slot: 1, incarnation: 0, text: w1 },
  ]);
  assert.equal(valueOf(again, DURATION, COUNT), 15, "7 + 2 + 1 from slot 0, 5 from slot 1");
  assert.equal(valueOf(again, DURATION, FAST), 13);
  assert.equal(valueOf(again, "breakwater_retries_total", RETRIES), 4);
  // The main thread's own series are as it wrote them.
  assert.equal(
    valueOf(again, "breakwater_breaker_state", `breakwater_breaker_state{${LABELS}}`),
    0,
  );
});

Deno.test("metrics merge: answers of one incarnation are not carried twice", () => {
  const merge = createExpositionMerger();
  const text = (all: number) => workerText({ fast: all, all, sumSeconds: all / 100 });
  for (const all of [1, 4, 9]) {
    const merged = merge(MAIN, [{ slot: 0, incarnation: 0, text: text(all) }]);
    assert.equal(valueOf(merged, DURATION, COUNT), all);
  }
  // The same last answer returned again (a slow worker): the same sum, not more.
  assert.equal(
    valueOf(merge(MAIN, [{ slot: 0, incarnation: 0, text: text(9) }]), DURATION, COUNT),
    9,
  );
  // A slot's offsets are its own: slot 1's first answer starts from zero.
  const both = merge(MAIN, [
    { slot: 0, incarnation: 0, text: text(9) },
    { slot: 1, incarnation: 0, text: text(2) },
  ]);
  assert.equal(valueOf(both, DURATION, COUNT), 11);
});

Deno.test("metrics merge: counter samples are counters, histogram parts, summary sums and counts", () => {
  assert.equal(isCounterSample("counter", "a_total", 'a_total{x="1"}'), true);
  assert.equal(isCounterSample("histogram", "h", 'h_bucket{le="1"}'), true);
  assert.equal(isCounterSample("histogram", "h", "h_sum"), true);
  assert.equal(isCounterSample("histogram", "h", "h_count"), true);
  assert.equal(isCounterSample("summary", "s", 's{quantile="0.5"}'), false);
  assert.equal(isCounterSample("summary", "s", "s_count"), true);
  assert.equal(isCounterSample("gauge", "g", "g"), false);
  assert.equal(isCounterSample("untyped", "u", "u"), false);
});
