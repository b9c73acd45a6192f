/**
 * HTTPS on the public port: req/s and CPU per request of Breakwater terminating TLS
 * (`listen.tls`) against nginx terminating TLS with the same certificate (one worker,
 * keep-alive upstream pool), each next to its own plain HTTP figure, in front of the shared
 * upstream. wrk speaks HTTP/1.1 over TLS (keep-alive, so handshakes are amortised); HTTP/2
 * is not measured here (wrk has no h2, and h2load is not installed).
 *
 * The four targets run side by side and are measured in alternation, so drift on the shared
 * machine spreads over all of them. Figures go to the run's notes (one line per target).
 *
 * @module
 */
import { createTestCa } from "../../tests/e2e/_tls_certs.ts";
import type { BenchUpstream } from "../lib/lineup.ts";
import { lineupServices } from "../lib/lineup.ts";
import { freePort, waitHttp } from "../lib/ports.ts";
import { stopPid } from "../lib/processes.ts";
import { waitQuiet } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { log, median, REPS, sleep } from "../lib/settings.ts";
import { startGateway, startNginx, startNginxWith, type Target } from "../lib/targets.ts";
import { wrk, type WrkResult } from "../lib/wrk.ts";

/** wrk connections. */
export const HTTPS_CONNECTIONS = 32;
/** wrk seconds per run. */
export const HTTPS_DURATION_S = 5;

/** nginx, one worker, terminating TLS (h2 and http/1.1 by ALPN) with `cert`/`key`. */
function startNginxTls(
  dir: string,
  upstream: BenchUpstream,
  cert: string,
  key: string,
): Promise<Target> {
  return startNginxWith(dir, {
    name: "nginx-tls",
    label: "nginx (HTTPS)",
    scheme: "https",
    http: [`upstream bench_upstream { server 127.0.0.1:${upstream.port}; keepalive 32; }`],
    listen: "ssl http2",
    server: [
      `ssl_certificate ${cert};`,
      `ssl_certificate_key ${key};`,
      "location / {",
      "  proxy_pass http://bench_upstream;",
      "  proxy_http_version 1.1;",
      '  proxy_set_header Connection "";',
      "  proxy_buffering off;",
      "}",
    ],
  });
}

/** Waits until `url` answers over TLS trusting `caCert`. */
async function waitHttps(url: string, caCert: string, timeoutMs = 30_000): Promise<void> {
  const client = Deno.createHttpClient({ caCerts: [caCert] });
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const response = await fetch(url, { client, signal: AbortSignal.timeout(5000) });
        await response.body?.cancel();
        if (response.status < 500) return;
      } catch { /* not yet */ }
      await sleep(100);
    }
    throw new Error(`${url} did not answer within ${timeoutMs} ms`);
  } finally {
    client.close();
  }
}

function line(target: string, runs: WrkResult[], plain: WrkResult[] | null): string {
  const rps = median(runs.map((r) => r.rps));
  const cpu = median(runs.map((r) => r.cpuUsPerRequest));
  const p99 = median(runs.map((r) => r.p99Ms));
  const errors = runs.reduce((sum, r) => sum + r.errors, 0);
  const versus = plain === null
    ? ""
    : `; x plain: req/s ${(rps / median(plain.map((r) => r.rps))).toFixed(2)}, CPU/req ${
      (cpu / median(plain.map((r) => r.cpuUsPerRequest))).toFixed(2)
    }`;
  return `https c${HTTPS_CONNECTIONS}: ${target}: ${rps.toFixed(0)} req/s, ${
    cpu.toFixed(1)
  } us CPU/req, p99 ${p99.toFixed(2)} ms, errors ${errors}${versus} ` +
    `(median of ${runs.length}: ${runs.map((r) => r.rps.toFixed(0)).join(", ")} req/s)`;
}

async function run(context: BenchContext): Promise<void> {
  const { results, dir } = context;
  if (!context.tools.wrk) {
    results.notes.push("wrk missing: https skipped");
    return;
  }
  const upstream = await context.upstream();
  const ca = await createTestCa();
  const leaf = await ca.issue("localhost");
  const caCert = await Deno.readTextFile(ca.caFile);
  const targets: Target[] = [];
  try {
    const plainNginx = await startNginx(dir, upstream.port);
    targets.push({ ...plainNginx, name: "nginx (HTTP)" });
    const tlsNginx = await startNginxTls(dir, upstream, leaf.certFile, leaf.keyFile);
    targets.push(tlsNginx);
    const plainGateway = await startGateway({
      name: "Breakwater (HTTP)",
      dir,
      services: lineupServices(upstream),
      kvPath: ":memory:",
      logLevel: "warn",
      logPath: `${dir}/gateway-https-plain.log`,
    });
    targets.push(plainGateway);
    const tlsPort = freePort();
    const tlsGateway = await startGateway({
      name: "Breakwater (HTTPS)",
      dir,
      services: lineupServices(upstream),
      kvPath: ":memory:",
      logLevel: "warn",
      logPath: `${dir}/gateway-https-tls.log`,
      extra: {
        listen: {
          hostname: "127.0.0.1",
          port: freePort(),
          tls: { certFile: leaf.certFile, keyFile: leaf.keyFile, port: tlsPort },
        },
      },
    });
    targets.push({ ...tlsGateway, url: `https://127.0.0.1:${tlsPort}` });
    for (const target of targets) {
      if (target.url.startsWith("https:")) await waitHttps(`${target.url}/`, caCert);
      else await waitHttp(`${target.url}/`);
    }
    for (const target of targets) await wrk(`${target.url}/`, HTTPS_CONNECTIONS, 1, null);
    const runs = targets.map(() => [] as WrkResult[]);
    for (let rep = 0; rep < REPS; rep++) {
      for (const [index, target] of targets.entries()) {
        await waitQuiet(20_000);
        const result = await wrk(
          `${target.url}/`,
          HTTPS_CONNECTIONS,
          HTTPS_DURATION_S,
          target.pid,
          [upstream.proc.pid],
        );
        runs[index].push(result);
        log(
          `rep ${rep + 1} ${target.name}: ${result.rps.toFixed(0)} req/s, ` +
            `${result.cpuUsPerRequest.toFixed(1)} us CPU/req, foreign CPU ${
              (100 * result.foreignCpuShare).toFixed(0)
            }%${result.errors ? `, errors ${result.errors}` : ""}`,
        );
      }
    }
    // Pairs: [plain, TLS] for nginx, then for Breakwater.
    for (const first of [0, 2]) {
      results.notes.push(line(targets[first].name, runs[first], null));
      results.notes.push(line(targets[first + 1].name, runs[first + 1], runs[first]));
    }
    const ratio = (index: number, pick: (r: WrkResult) => number) => median(runs[index].map(pick));
    results.notes.push(
      `https c${HTTPS_CONNECTIONS}: Breakwater (HTTPS) vs nginx (HTTPS): req/s ${
        (ratio(3, (r) => r.rps) / ratio(1, (r) => r.rps)).toFixed(2)
      }x, CPU/req ${
        (ratio(3, (r) => r.cpuUsPerRequest) / ratio(1, (r) => r.cpuUsPerRequest)).toFixed(2)
      }x`,
    );
  } finally {
    for (const target of targets) await stopPid(target.pid);
    await ca.remove();
  }
}

/** The HTTPS scenario. */
export const https: Scenario = {
  name: "https",
  title: "wrk -c32 5 s over TLS (http/1.1): Breakwater vs nginx with the same certificate, " +
    "each beside its plain HTTP figure",
  needs: ["upstream"],
  run,
};
