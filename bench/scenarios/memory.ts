/**
 * Streaming memory of a gateway process, per upstream client: peak RSS while curl downloads
 * 256 MiB and while it uploads 100 MiB chunked, once to an upstream that reads at full speed and
 * once to one that pauses after every MiB (so the gateway must hold the client back), each cold
 * (the first transfer after the process started) and warm (the transfer after that one). nginx,
 * when installed, runs the same transfers as a baseline.
 *
 * Every (proxy, transfer) pair gets a fresh process, so "cold" is really the first transfer
 * that process ever made. Peak RSS is VmHWM after writing `5` to `/proc/PID/clear_refs` (which
 * resets it to the current RSS, proc(5)); VmRSS sampled every 10 ms is kept as a check.
 *
 * @module
 */
import { waitHttp } from "../lib/ports.ts";
import { run as runCommand, stopPid } from "../lib/processes.ts";
import type { MemoryRow } from "../lib/results.ts";
import { procStatusKiB, resetPeak } from "../lib/sampling.ts";
import type { BenchContext, Scenario } from "../lib/scenario.ts";
import { decoder, log, sleep } from "../lib/settings.ts";
import { startGateway, startNginx } from "../lib/targets.ts";

const MIB = 1024 * 1024;

/**
 * The transfers measured, each on a fresh process. The 1 MiB download is a control: what a
 * process's first requests cost whatever their size (compiled code, heap growth), so the large
 * transfers' cold figures can be read against it.
 */
export const TRANSFERS = [
  "download 1 MiB (control)",
  "download",
  "upload",
  "upload, slow upstream",
] as const;
/** One of {@link TRANSFERS}. */
export type Transfer = typeof TRANSFERS[number];
/** The download: large enough that holding it would show far above the 16 MiB target. */
export const DOWNLOAD_MIB = 256;
/** The control download. */
export const CONTROL_MIB = 1;
/** The chunked upload. */
export const UPLOAD_MIB = 100;
/** The product's target for every transfer, cold or warm. */
export const GROWTH_TARGET_MIB = 16;
/**
 * The slow upstream pauses this long after every MiB it reads: at most ~100 MiB/s, below what
 * curl and the gateway push on loopback, so the gateway's request-body backpressure is what
 * keeps its memory flat. (Each pause fills the socket buffers; on loopback every refill then
 * costs more than the pause itself, so the paced uploads run at ~4-20 MiB/s.)
 */
export const UPLOAD_PAUSE_MS_PER_MIB = 10;
/** curl's bound on one transfer, so a stuck transfer fails the run instead of hanging it. */
const CURL_MAX_TIME_S = 300;

/** The upstream of this scenario, served by the bench process itself. */
interface MemoryUpstream {
  port: number;
  url: string;
  shutdown(): Promise<void>;
}

/** A pull stream of `bytes` in 64 KiB chunks: produced only as fast as the reader takes it. */
function patternBody(bytes: number): ReadableStream<Uint8Array> {
  const chunk = new Uint8Array(64 * 1024).fill(120);
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= bytes) return controller.close();
      const size = Math.min(chunk.length, bytes - sent);
      controller.enqueue(chunk.slice(0, size));
      sent += size;
    },
  });
}

/** Reads a request body; `paced`: pausing {@link UPLOAD_PAUSE_MS_PER_MIB} after every MiB. */
async function readBody(body: ReadableStream<Uint8Array> | null, paced: boolean): Promise<number> {
  if (body === null) return 0;
  let bytes = 0;
  let sincePause = 0;
  for await (const chunk of body) {
    bytes += chunk.length;
    sincePause += chunk.length;
    if (paced && sincePause >= MIB) {
      sincePause = 0;
      await sleep(UPLOAD_PAUSE_MS_PER_MIB);
    }
  }
  return bytes;
}

/**
 * `GET /down?mib=N`: N MiB with a `Content-Length`; `PUT`/`POST`: reads the body (paced under
 * `/slow`) and answers `{"bytes": N}`; anything else: `ok` (readiness).
 */
function startMemoryUpstream(): MemoryUpstream {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (request) => {
      const url = new URL(request.url);
      if (request.method === "PUT" || request.method === "POST") {
        const bytes = await readBody(request.body, url.pathname === "/slow");
        return Response.json({ bytes });
      }
      if (url.pathname === "/down") {
        const bytes = Number(url.searchParams.get("mib") ?? 0) * MIB;
        return new Response(patternBody(bytes), {
          headers: { "content-type": "application/octet-stream", "content-length": `${bytes}` },
        });
      }
      return new Response("ok");
    },
  );
  return {
    port: server.addr.port,
    url: `http://127.0.0.1:${server.addr.port}`,
    shutdown: () => server.shutdown(),
  };
}

/** One proxy process under test. */
interface MemoryTarget {
  name: string;
  url: string;
  /** The process whose memory is measured (nginx: its single worker). */
  measuredPid: number;
  stop(): Promise<void>;
}

/** A fresh gateway process with one service on `client`, the access log off. */
async function freshGateway(
  dir: string,
  upstream: MemoryUpstream,
  client: "http1" | "fetch",
): Promise<MemoryTarget> {
  const gateway = await startGateway({
    name: `memory-${client}`,
    dir,
    services: {
      api: {
        prefix: "/",
        upstreams: [upstream.url],
        upstreamClient: client,
        // The throttled upload takes seconds; the default would answer 504 before its head.
        timeoutMs: 120_000,
      },
    },
    kvPath: ":memory:",
    logLevel: "warn",
    logPath: `${dir}/memory-${client}.log`,
  });
  await waitHttp(`${gateway.url}/healthz`);
  return {
    name: `Breakwater (${client} client)`,
    url: gateway.url,
    measuredPid: gateway.pid,
    stop: () => stopPid(gateway.pid),
  };
}

/** A fresh nginx (one worker, request and response buffering off) in front of `upstream`. */
async function freshNginx(dir: string, upstream: MemoryUpstream): Promise<MemoryTarget> {
  const nginx = await startNginx(dir, upstream.port);
  await waitHttp(`${nginx.url}/`);
  const children = await runCommand("pgrep", ["-P", String(nginx.pid)]);
  const worker = Number(decoder.decode(children.stdout).trim().split("\n")[0]);
  if (!Number.isInteger(worker) || worker <= 0) {
    await stopPid(nginx.pid);
    throw new Error("nginx worker process not found");
  }
  return { name: "nginx", url: nginx.url, measuredPid: worker, stop: () => stopPid(nginx.pid) };
}

/** What curl reported for one transfer. */
interface CurlTransfer {
  bytes: number;
  seconds: number;
}

/**
 * One transfer with curl. Upload: `dd` from /dev/zero piped into `curl -T -` with
 * `Transfer-Encoding: chunked` (no length known up front, as a streaming client sends it).
 * dd writes 1 MiB at a time: `head -c` writes small pieces, which curl sends as small TCP
 * segments that stall for tens of ms (Nagle against delayed ACKs) each time the receiver's
 * window reopens, and the run measured that stall instead of the proxy.
 */
async function transfer(target: MemoryTarget, kind: Transfer): Promise<CurlTransfer> {
  const common = `curl -sS --max-time ${CURL_MAX_TIME_S} -H 'Expect:'`;
  const isDownload = kind.startsWith("download");
  const expected = (kind === "download" ? DOWNLOAD_MIB : isDownload ? CONTROL_MIB : UPLOAD_MIB) *
    MIB;
  const script = isDownload
    ? `${common} -o /dev/null -w '%{http_code} %{size_download} %{time_total}' ` +
      `'${target.url}/down?mib=${expected / MIB}'`
    : `dd if=/dev/zero bs=1M count=${UPLOAD_MIB} status=none | ${common} -T - ` +
      `-H 'Transfer-Encoding: chunked' -w '\\n%{http_code} %{size_upload} %{time_total}' ` +
      `'${target.url}/${kind === "upload" ? "upload" : "slow"}'`;
  const output = await runCommand("sh", ["-c", script]);
  const lines = decoder.decode(output.stdout).trim().split("\n");
  const [status, size, seconds] = (lines.at(-1) ?? "").split(" ");
  if (status !== "200") {
    throw new Error(
      `${target.name} ${kind}: status ${status} ${decoder.decode(output.stderr).trim()}`,
    );
  }
  // The upload's proof is the upstream's count, not curl's: the body must have arrived whole.
  const bytes = isDownload ? Number(size) : JSON.parse(lines[0]).bytes;
  if (bytes !== expected) {
    throw new Error(`${target.name} ${kind}: ${bytes} bytes arrived, ${expected} sent`);
  }
  return { bytes, seconds: Number(seconds) };
}

/** One transfer with the process's resident memory read around it. */
async function measured(
  target: MemoryTarget,
  kind: Transfer,
  phase: "cold" | "warm",
): Promise<MemoryRow> {
  const pid = target.measuredPid;
  resetPeak(pid);
  const rssBeforeKiB = procStatusKiB(pid, "VmRSS");
  let sampledKiB = rssBeforeKiB;
  const sampler = setInterval(() => {
    try {
      sampledKiB = Math.max(sampledKiB, procStatusKiB(pid, "VmRSS"));
    } catch { /* exited: the transfer fails and says so */ }
  }, 10);
  let result: CurlTransfer;
  try {
    result = await transfer(target, kind);
  } finally {
    clearInterval(sampler);
  }
  const peakKiB = procStatusKiB(pid, "VmHWM");
  return {
    target: target.name,
    transfer: kind,
    phase,
    mib: result.bytes / MIB,
    rssBeforeMiB: rssBeforeKiB / 1024,
    peakMiB: peakKiB / 1024,
    sampledPeakMiB: sampledKiB / 1024,
    growthMiB: (peakKiB - rssBeforeKiB) / 1024,
    mibPerS: result.bytes / MIB / result.seconds,
  };
}

async function run(context: BenchContext): Promise<void> {
  const { results, dir } = context;
  if (!context.tools.curl) {
    results.notes.push("curl missing: memory skipped");
    return;
  }
  const upstream = startMemoryUpstream();
  const starters: Array<() => Promise<MemoryTarget>> = [
    () => freshGateway(dir, upstream, "http1"),
    () => freshGateway(dir, upstream, "fetch"),
  ];
  if (context.tools.nginx) starters.push(() => freshNginx(dir, upstream));
  else results.notes.push("nginx missing: memory baseline skipped");
  try {
    for (const start of starters) {
      for (const kind of TRANSFERS) {
        const target = await start();
        try {
          for (const phase of ["cold", "warm"] as const) {
            const row = await measured(target, kind, phase);
            results.memory.push(row);
            log(
              `memory ${row.target} ${kind} ${phase}: +${row.growthMiB.toFixed(1)} MiB ` +
                `(from ${row.rssBeforeMiB.toFixed(1)}), ${row.mibPerS.toFixed(0)} MiB/s`,
            );
          }
        } finally {
          await target.stop();
        }
      }
    }
  } finally {
    await upstream.shutdown();
  }
}

/** The streaming memory scenario. */
export const memory: Scenario = {
  name: "memory",
  title: `peak RSS per upstream client: ${UPLOAD_MIB} MiB chunked up, ${DOWNLOAD_MIB} MiB down`,
  needs: [],
  run,
};
