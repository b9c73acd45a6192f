/**
 * The demo's two upstreams: `catalog`, always healthy, and `orders`, which fails on demand.
 *
 * Run one on its own (the compose example in `deploy/compose/` does):
 * `deno run --allow-net demo/upstreams.ts orders 9002 0.0.0.0`.
 *
 * @module
 */

/** A running demo upstream. */
export interface DemoUpstream {
  /** Its origin, e.g. `http://127.0.0.1:9001`. */
  origin: string;
  /** Stops it. */
  close(): Promise<void>;
}

/**
 * Starts the always-healthy upstream: answers every path with a small JSON document.
 *
 * @example
 * ```ts
 * const catalog = startCatalog(9001);
 * await catalog.close();
 * ```
 */
export function startCatalog(port: number, hostname = "127.0.0.1"): DemoUpstream {
  const server = Deno.serve({ hostname, port, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    return Response.json({ service: "catalog", path: url.pathname, items: ["anchor", "buoy"] });
  });
  return { origin: `http://${hostname}:${server.addr.port}`, close: () => server.shutdown() };
}

/**
 * Starts the flaky upstream. `POST /chaos?fail=1` makes every request answer 503 until
 * `POST /chaos?fail=0` heals it.
 */
export function startOrders(port: number, hostname = "127.0.0.1"): DemoUpstream {
  let failing = false;
  const server = Deno.serve({ hostname, port, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/chaos" && request.method === "POST") {
      failing = url.searchParams.get("fail") === "1";
      return Response.json({ failing });
    }
    if (failing) return Response.json({ error: "orders is down (demo)" }, { status: 503 });
    return Response.json({ service: "orders", path: url.pathname, orders: [{ id: 1 }] });
  });
  return { origin: `http://${hostname}:${server.addr.port}`, close: () => server.shutdown() };
}

if (import.meta.main) {
  const [name, port = "0", hostname = "127.0.0.1"] = Deno.args;
  const start = name === "catalog" ? startCatalog : name === "orders" ? startOrders : null;
  if (start === null || !/^\d+$/.test(port)) {
    console.error("usage: deno run --allow-net demo/upstreams.ts catalog|orders PORT [HOSTNAME]");
    Deno.exit(2);
  }
  const upstream = start(Number(port), hostname);
  console.log(`demo upstream ${name} on ${upstream.origin}`);
  // Containers stop with SIGTERM; exit at once (the demo upstreams hold no state worth draining).
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    Deno.addSignalListener(signal, () => Deno.exit(0));
  }
}
