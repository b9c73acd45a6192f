/**
 * Ports for the processes of a run, and waiting until one answers HTTP.
 *
 * @module
 */
import { sleep } from "./settings.ts";

/**
 * Ports handed out in this run: the OS may give a just-released port again, and two gateways of
 * one fleet on the same port made one instance silently missing.
 */
const handedOutPorts = new Set<number>();

/** A free loopback port never handed out before in this run. */
export function freePort(): number {
  for (;;) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (listener.addr as Deno.NetAddr).port;
    listener.close();
    if (handedOutPorts.has(port)) continue;
    handedOutPorts.add(port);
    return port;
  }
}

/** Polls `url` every 100 ms until it answers below 500; throws after `timeoutMs`. */
export async function waitHttp(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(5000) });
      await response.body?.cancel();
      if (response.status < 500) return;
    } catch { /* not yet */ }
    await sleep(100);
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}
