/**
 * `deno task demo`: two upstreams on loopback and the gateway in front of them, configured by
 * the shipped `breakwater.json`. Ctrl-C drains the gateway and stops everything.
 *
 * @module
 */
import { startCatalog, startOrders } from "./upstreams.ts";

startCatalog(9001);
startOrders(9002);

console.log(`
Breakwater demo: upstreams on 127.0.0.1:9001 (catalog) and :9002 (orders), gateway on :8080.

  curl -i localhost:8080/api/catalog/items          # forwarded to catalog
  curl -i localhost:8080/readyz                     # readiness, breakers, pools
  curl -X POST '127.0.0.1:9002/chaos?fail=1'        # make orders fail
  for i in $(seq 8); do curl -s -o /dev/null -w '%{http_code} ' localhost:8080/api/orders/1; done
                                                    # 503s from orders, then breaker_open
  curl -s 127.0.0.1:9090/admin/breakers             # the breaker is open, for the whole fleet
  open http://127.0.0.1:9090/                       # the dashboard
  curl -X POST '127.0.0.1:9002/chaos?fail=0'        # heal it: the breaker closes after a probe

Ctrl-C stops the demo.
`);

// The gateway itself, exactly as `deno task start` runs it (reads ./breakwater.json).
await import("../src/main.ts");
