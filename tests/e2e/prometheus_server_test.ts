/**
 * A real Prometheus (Debian's `prometheus` package) scrapes a gateway process on loopback;
 * the operator's questions are asked through Prometheus' HTTP API with PromQL: request rate by
 * status, a latency quantile (`histogram_quantile`), the breaker state. `promtool check
 * metrics` must accept `/metrics` as it is.
 *
 * Skipped, saying so in its name, when the `prometheus` binary is not installed
 * (`apt-get install -y prometheus`).
 */
import assert from "node:assert/strict";
import { startGatewayProcess } from "../_helpers/gateway.ts";
import { freePort, startUpstream } from "../_helpers/upstream.ts";
import { waitFor } from "../_helpers/wait.ts";

function binary(name: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not in this directory
    }
  }
  return null;
}

const PROMETHEUS = binary("prometheus");
const PROMTOOL = binary("promtool");

interface VectorSample {
  metric: Record<string, string>;
  value: [number, string];
}

/** One instant query through Prometheus' HTTP API (bounded). */
async function query(base: string, promql: string): Promise<VectorSample[]> {
  const url = `${base}/api/v1/query?query=${encodeURIComponent(promql)}`;
  const response = await fetch(url, { signal: AbortSignal.timeout(3000) });
  const body = await response.json() as {
    status: string;
    data?: { resultType: string; result: VectorSample[] };
    error?: string;
  };
  assert.equal(body.status, "success", `${promql}: ${body.error}`);
  return body.data!.result;
}

/** `promtool check metrics` on `text`; resolves with its exit code and output. */
async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(PROMTOOL!, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  const { code, stdout, stderr } = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  return { code, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

Deno.test({
  name: PROMETHEUS === null
    ? "prometheus scrapes the gateway (SKIPPED: `prometheus` not installed; apt-get install -y prometheus)"
    : "prometheus scrapes the gateway: rate by status, p99, breaker state; promtool accepts /metrics",
  ignore: PROMETHEUS === null || PROMTOOL === null,
  async fn() {
    const upstream = startUpstream(() => new Response("ok"));
    const deadPort = freePort();
    const dir = await Deno.makeTempDir({ prefix: "breakwater-prometheus-" });
    const gateway = await startGatewayProcess({
      services: {
        users: { prefix: "/api/users", upstreams: [upstream.origin] },
        dead: {
          prefix: "/api/dead",
          upstreams: [`http://127.0.0.1:${deadPort}`],
          breaker: { failureThreshold: 2, recoveryTimeoutMs: 600_000 },
          retry: { attempts: 0 },
        },
      },
    });
    let prometheus: Deno.ChildProcess | null = null;
    try {
      const metricsUrl = `${gateway.adminUrl}/metrics`;
      const metricsText = await (await fetch(metricsUrl, { signal: AbortSignal.timeout(3000) }))
        .text();
      const checked = await promtoolCheck(metricsText);
      assert.equal(checked.code, 0, `promtool check metrics:\n${checked.output}`);

      const prometheusPort = freePort();
      const target = new URL(gateway.adminUrl).host;
      await Deno.writeTextFile(
        `${dir}/prometheus.yml`,
        [
          "global:",
          "  scrape_interval: 1s",
          "  evaluation_interval: 1s",
          "scrape_configs:",
          "  - job_name: breakwater",
          "    metrics_path: /metrics",
          "    static_configs:",
          `      - targets: ["${target}"]`,
          "",
        ].join("\n"),
      );
      prometheus = new Deno.Command(PROMETHEUS!, {
        args: [
          `--config.file=${dir}/prometheus.yml`,
          `--storage.tsdb.path=${dir}/data`,
          `--web.listen-address=127.0.0.1:${prometheusPort}`,
          "--log.level=warn",
        ],
        stdout: "null",
        stderr: "piped",
      }).spawn();
      const api = `http://127.0.0.1:${prometheusPort}`;
      await waitFor(async () => {
        try {
          const up = await query(api, 'up{job="breakwater"}');
          return up.length === 1 && up[0].value[1] === "1";
        } catch {
          return false; // not listening yet
        }
      }, { timeoutMs: 20_000, intervalMs: 200, what: "prometheus scraped the gateway once" });

      // Traffic after the first scrape, so rates over the next scrapes are not zero.
      for (let i = 0; i < 20; i++) {
        const response = await fetch(`${gateway.url}/api/users/${i}`, {
          signal: AbortSignal.timeout(3000),
        });
        assert.equal(response.status, 200);
        await response.body?.cancel();
      }
      // Until the breaker answers (bounded): with workers ("auto") the trip reaches the worker
      // that serves the next request through the main thread, a few ms later on a busy machine.
      const deadStatuses: number[] = [];
      for (let i = 0; i < 100 && !deadStatuses.includes(503); i++) {
        const response = await fetch(`${gateway.url}/api/dead/${i}`, {
          signal: AbortSignal.timeout(3000),
        });
        deadStatuses.push(response.status);
        await response.body?.cancel();
        if (i >= 5) await new Promise((resolve) => setTimeout(resolve, 20));
      }
      assert.ok(deadStatuses.includes(502), `the dead upstream answers 502: ${deadStatuses}`);
      assert.ok(deadStatuses.includes(503), `then the breaker answers 503: ${deadStatuses}`);

      // Steady traffic while Prometheus scrapes, so rates are not zero (a series' first sample
      // already holds its count). Bounded: it stops at the end of the test or after 40 s.
      let steady = true;
      const traffic = (async () => {
        const until = performance.now() + 40_000;
        while (steady && performance.now() < until) {
          for (const path of ["/api/users/steady", "/api/dead/steady"]) {
            const response = await fetch(`${gateway.url}${path}`, {
              signal: AbortSignal.timeout(3000),
            }).catch(() => null);
            await response?.body?.cancel();
          }
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      })();
      try {
        // Request rate by status (the dashboard's error-rate panel).
        const byStatus = "sum by (http_response_status_code) " +
          "(rate(http_server_request_duration_seconds_count[1m]))";
        await waitFor(async () => {
          const rates = await query(api, byStatus);
          const of = (status: string) =>
            Number(
              rates.find((s) => s.metric.http_response_status_code === status)?.value[1] ?? 0,
            );
          return of("200") > 0 && of("503") > 0;
        }, { timeoutMs: 20_000, intervalMs: 250, what: `${byStatus} with 200 and 503` });
      } finally {
        steady = false;
        await traffic;
      }
      const totals = await query(
        api,
        "sum by (http_response_status_code) (http_server_request_duration_seconds_count)",
      );
      assert.deepEqual(
        totals.map((s) => s.metric.http_response_status_code).sort(),
        ["200", "502", "503"],
      );

      // The gateway's own 503 is told apart from an upstream's by error.type.
      const breakerOpen = await query(
        api,
        'sum(http_server_request_duration_seconds_count{error_type="breaker_open"})',
      );
      assert.ok(Number(breakerOpen[0]?.value[1]) >= 1, JSON.stringify(breakerOpen));

      // p99 latency of the healthy service, from the histogram buckets.
      const p99 = await query(
        api,
        "histogram_quantile(0.99, sum by (le) " +
          '(rate(http_server_request_duration_seconds_bucket{breakwater_service="users"}[1m])))',
      );
      assert.equal(p99.length, 1, JSON.stringify(p99));
      const p99S = Number(p99[0].value[1]);
      assert.ok(Number.isFinite(p99S) && p99S > 0 && p99S < 5, `p99 ${p99S} s`);

      // Which breakers are open (2 open, 3 forced open).
      const open = await query(api, "breakwater_breaker_state >= 2");
      assert.deepEqual(open.map((s) => [s.metric.breakwater_service, s.value[1]]), [["dead", "2"]]);
      const closed = await query(api, 'breakwater_breaker_state{breakwater_service="users"}');
      assert.equal(closed[0]?.value[1], "0");

      // Build info and start time are there for "what runs where, since when".
      const build = await query(api, "breakwater_build_info");
      assert.equal(build.length, 1);
      assert.equal(build[0].value[1], "1");
      const started = await query(api, "process_start_time_seconds");
      const startedS = Number(started[0]?.value[1]);
      assert.ok(startedS > 1e9 && startedS <= Date.now() / 1000, `start time ${startedS}`);
    } finally {
      if (prometheus !== null) {
        prometheus.kill("SIGTERM");
        const timer = setTimeout(() => prometheus?.kill("SIGKILL"), 10_000);
        await prometheus.status;
        clearTimeout(timer);
        await prometheus.stderr.cancel().catch(() => {});
      }
      await gateway.stop();
      await upstream.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
