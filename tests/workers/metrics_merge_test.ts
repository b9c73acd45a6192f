/**
 * The instance's `/metrics` with workers: a ratio gauge is not a sum. Texts are shaped like a
 * worker's real exposition (OpenTelemetry's Prometheus serializer, as `GET /metrics` writes it).
 */
import assert from "node:assert/strict";
import { mergeExpositions, parseExposition } from "../../src/workers/metrics_merge.ts";

const LABELS = 'breakwater_service="api",otel_scope_name="breakwater",otel_scope_version="0.1.0"';
const OTHER = 'breakwater_service="web",otel_scope_name="breakwater",otel_scope_version="0.1.0"';

const MAIN = `# HELP breakwater_pool_active Requests in flight to the service's upstreams
# TYPE breakwater_pool_active gauge
breakwater_pool_active{${LABELS}} 0
# HELP breakwater_pool_usage_ratio Requests in flight / pool.maxConnections
# TYPE breakwater_pool_usage_ratio gauge
breakwater_pool_usage_ratio{${LABELS}} 0
# HELP breakwater_pool_limit In-flight limit of the service's pool (moves with adaptive concurrency)
# TYPE breakwater_pool_limit gauge
breakwater_pool_limit{${LABELS}} 20
`;

interface Pool {
  active: number;
  limit: number;
}

/** A worker's pool gauges; no usage sample for a zero limit (the gauge observes none then). */
function workerText(pools: { api: Pool; web?: Pool }): string {
  const series = Object.entries(pools).map(([name, pool]) => ({
    labels: name === "api" ? LABELS : OTHER,
    pool: pool as Pool,
  }));
  let text = `# HELP breakwater_pool_active Requests in flight to the service's upstreams
# TYPE breakwater_pool_active gauge
`;
  for (const { labels, pool } of series) {
    text += `breakwater_pool_active{${labels}} ${pool.active}\n`;
  }
  text += `# HELP breakwater_pool_usage_ratio Requests in flight / pool.maxConnections
# TYPE breakwater_pool_usage_ratio gauge
`;
  for (const { labels, pool } of series) {
    if (pool.limit > 0) {
      text += `breakwater_pool_usage_ratio{${labels}} ${pool.active / pool.limit}\n`;
    }
  }
  text += `# HELP breakwater_pool_limit In-flight limit of the service's pool
# TYPE breakwater_pool_limit gauge
`;
  for (const { labels, pool } of series) text += `breakwater_pool_limit{${labels}} ${pool.limit}\n`;
  return text;
}

function samplesOf(text: string, family: string): Record<string, number> {
  const found = parseExposition(text).find((each) => each.name === family);
  assert.ok(found !== undefined, `${family} in ${text}`);
  return Object.fromEntries(found.samples);
}

Deno.test("workers /metrics: pool usage is the summed in-flight over the summed limit, not a sum of ratios", () => {
  const merged = mergeExpositions(MAIN, [
    workerText({ api: { active: 3, limit: 10 }, web: { active: 0, limit: 4 } }),
    workerText({ api: { active: 1, limit: 10 }, web: { active: 2, limit: 4 } }),
  ]);
  assert.deepEqual(samplesOf(merged, "breakwater_pool_active"), {
    [`breakwater_pool_active{${LABELS}}`]: 4,
    [`breakwater_pool_active{${OTHER}}`]: 2,
  });
  assert.deepEqual(samplesOf(merged, "breakwater_pool_limit"), {
    [`breakwater_pool_limit{${LABELS}}`]: 20,
    [`breakwater_pool_limit{${OTHER}}`]: 8,
  });
  assert.deepEqual(samplesOf(merged, "breakwater_pool_usage_ratio"), {
    [`breakwater_pool_usage_ratio{${LABELS}}`]: 0.2, // 4 / 20, not 0.3 + 0.1 = 0.4
    [`breakwater_pool_usage_ratio{${OTHER}}`]: 0.25, // 2 / 8, not 0 + 0.5
  });
});

Deno.test("workers /metrics: pool usage over a worker whose limit is zero, and all busy", () => {
  // One worker's adaptive limit fell to zero (no usage sample from it); the other is full.
  const merged = mergeExpositions(MAIN, [
    workerText({ api: { active: 0, limit: 0 } }),
    workerText({ api: { active: 5, limit: 5 } }),
  ]);
  assert.deepEqual(samplesOf(merged, "breakwater_pool_usage_ratio"), {
    [`breakwater_pool_usage_ratio{${LABELS}}`]: 1,
  });
  // Every worker full: the instance is full (1), never 2.
  const full = mergeExpositions(MAIN, [
    workerText({ api: { active: 10, limit: 10 } }),
    workerText({ api: { active: 10, limit: 10 } }),
  ]);
  assert.deepEqual(samplesOf(full, "breakwater_pool_usage_ratio"), {
    [`breakwater_pool_usage_ratio{${LABELS}}`]: 1,
  });
});
