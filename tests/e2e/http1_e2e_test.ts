/**
 * The e2e forwarding and broken-upstream suites again, with every service on the HTTP/1.1
 * upstream client (`defaults.upstreamClient: "http1"`), plus the cases that matter most for a
 * hand-written client: multiple Set-Cookie, and a large download through a gateway process.
 */
import assert from "node:assert/strict";
import {
  startGatewayProcess,
  startTestGateway as startFetchGateway,
  withUpstreamClient,
} from "../_helpers/gateway.ts";
import { startUpstream } from "../_helpers/upstream.ts";
import { forwardingCases } from "./_forwarding_cases.ts";
import { upstreamFailureCases } from "./_upstream_failure_cases.ts";
import { memoryKiB, streamedBody } from "../_helpers/process.ts";

forwardingCases("http1");
upstreamFailureCases("http1");

/** startTestGateway with every service on the http1 client. */
function startTestGateway(
  config: Record<string, unknown>,
  env: Record<string, string | undefined> = {},
) {
  return startFetchGateway(withUpstreamClient(config, "http1"), env);
}

Deno.test("http1: multiple Set-Cookie headers reach the client separately", async () => {
  const upstream = startUpstream(() => {
    const headers = new Headers();
    headers.append("set-cookie", "a=1; Path=/");
    headers.append("set-cookie", "b=2; HttpOnly");
    return new Response("cookies", { headers });
  });
  const gw = await startTestGateway({
    services: { app: { prefix: "/", upstreams: [upstream.origin] } },
  });
  try {
    const response = await fetch(`${gw.url}/c`);
    assert.equal(await response.text(), "cookies");
    assert.deepEqual(response.headers.getSetCookie(), ["a=1; Path=/", "b=2; HttpOnly"]);
  } finally {
    await gw.close();
    await upstream.close();
  }
});

Deno.test("http1: 256 MiB download streams through a gateway process in bounded memory", async () => {
  // Every chunk passes through JavaScript (unlike fetch's native body), so RSS rises by what
  // the GC has not collected yet (~70 MiB measured), but it must not grow with the body.
  const size = 256 * 1024 * 1024;
  const upstream = startUpstream(() => streamedBody(size));
  const gateway = await startGatewayProcess({
    defaults: { upstreamClient: "http1" },
    services: { big: { prefix: "/big", upstreams: [upstream.origin], timeoutMs: 60_000 } },
  });
  try {
    const pid = gateway.child.pid;
    await (await fetch(`${gateway.url}/big`)).body?.cancel(); // warm the code path
    const before = memoryKiB(pid);
    const download = await fetch(`${gateway.url}/big`);
    let received = 0;
    for await (const part of download.body!) received += part.byteLength;
    assert.equal(received, size);
    const after = memoryKiB(pid);
    const growthMiB = (after.peak - before.rss) / 1024;
    console.log(`http1 download: gateway peak RSS +${growthMiB.toFixed(1)} MiB`);
    assert.ok(growthMiB < 128, `peak RSS grew ${growthMiB.toFixed(1)} MiB for a 256 MiB download`);
  } finally {
    await gateway.stop();
    await upstream.close();
  }
});
