/**
 * The demo's two upstreams: `catalog`, always healthy, and `orders`, which fails on demand.
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

/** Starts the always-healthy upstream: answers every path with a small JSON document. */
export function startCatalog(port: number): DemoUpstream {
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    return Response.json({ service: "catalog", path: url.pathname, items: ["anchor", "buoy"] });
  });
  return { origin: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

/**
 * Starts the flaky upstream. `POST /chaos?fail=1` makes every other request answer 503;
 * `POST /chaos?fail=0` heals it.
 */
export function startOrders(port: number): DemoUpstream {
  let failing = false;
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (request) => {
    const url = new URL(request.url);
    if (url.pathname === "/chaos" && request.method === "POST") {
      failing = url.searchParams.get("fail") === "1";
      return Response.json({ failing });
    }
    if (failing) return Response.json({ error: "orders is down (demo)" }, { status: 503 });
    return Response.json({ service: "orders", path: url.pathname, orders: [{ id: 1 }] });
  });
  return { origin: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}
