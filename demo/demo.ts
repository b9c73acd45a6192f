/**
 * `deno task demo`: two upstreams on loopback and the gateway in front of them, configured by
 * `demo/breakwater.json`. The demo's KV is `:memory:`, so every run starts with closed breakers
 * whatever an earlier run left behind. Ctrl-C drains the gateway and stops everything.
 *
 * @module
 */
import { main } from "../src/main.ts";
import demoConfig from "./breakwater.json" with { type: "json" };
import { startCatalog, startOrders } from "./upstreams.ts";

const CONFIG_PATH = decodeURIComponent(new URL("./breakwater.json", import.meta.url).pathname);

const catalogPort = Number(new URL(demoConfig.services.catalog.upstreams[0]).port);
const ordersPort = Number(new URL(demoConfig.services.orders.upstreams[0]).port);
const gateway = `localhost:${demoConfig.listen.port}`;
const admin = `${demoConfig.admin.hostname}:${demoConfig.admin.port}`;
const recoveryS = demoConfig.services.orders.breaker.recoveryTimeoutMs / 1000;

try {
  startCatalog(catalogPort);
  startOrders(ordersPort);
} catch (error) {
  if (!(error instanceof Deno.errors.AddrInUse)) throw error;
  console.error(
    `breakwater demo: port ${catalogPort} or ${ordersPort} is in use (is another demo running?)`,
  );
  Deno.exit(1);
}

// Every curl prints the status and x-breakwater-error, so an upstream's own 503 (no header)
// and the gateway's breaker_open (header set) can be told apart.
const show = `-w '%{http_code} %header{x-breakwater-error}\\n'`;
console.log(`
Breakwater demo: catalog upstream on 127.0.0.1:${catalogPort}, orders on 127.0.0.1:${ordersPort},
gateway on ${gateway}, admin on ${admin}. Breakers start closed on every run (KV ":memory:").

In another terminal:

  curl -s -o /dev/null ${show} ${gateway}/api/catalog/items
      # 200: forwarded to catalog
  curl -s ${gateway}/readyz
      # readiness, breakers and pools as JSON
  curl -s -X POST '127.0.0.1:${ordersPort}/chaos?fail=1'
      # make orders answer 503
  for i in $(seq 8); do curl -s -o /dev/null ${show} ${gateway}/api/orders/1; done
      # "503 " from orders itself, then "503 breaker_open": the gateway stopped calling it
  curl -s ${admin}/admin/breakers
      # orders: open, with the time of the next probe
  curl -s -X POST '127.0.0.1:${ordersPort}/chaos?fail=0'
      # heal it: ${recoveryS} s after opening, one probe goes through and closes the breaker

Dashboard: http://${admin}/

Ctrl-C stops the demo.
`);

Deno.exit(await main(["--config", CONFIG_PATH, ...Deno.args]));
