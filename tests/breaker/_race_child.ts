/**
 * A separate process for the cross-process CAS race test: opens the KV file and, for each
 * round, waits for the round's start time, races `racers` trip transitions on the round's
 * service and prints the outcomes (one JSON array per round, as one JSON array).
 *
 * Args: kvPath startAtMs rounds racers
 */
import { createKvBreakerStore } from "../../src/breaker/kv_store.ts";
import { transition } from "../../src/breaker/policy.ts";
import { policy } from "./_helpers.ts";

const [path, startAtText, roundsText, racersText] = Deno.args;
const kv = await Deno.openKv(path);
const store = createKvBreakerStore(kv, { instanceId: `child-${Deno.pid}` });
const p = policy();
const rounds: string[][] = [];
for (let round = 0; round < Number(roundsText); round++) {
  const startAtMs = Number(startAtText) + round * 50;
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAtMs - Date.now())));
  const results = await Promise.all(
    Array.from({ length: Number(racersText) }, () =>
      store.transition(
        `race-${round}`,
        (record) => transition(p, record, { type: "trip" }, Date.now(), 0),
        0,
      )),
  );
  rounds.push(results.map((result) => result.outcome));
}
console.log(JSON.stringify(rounds));
kv.close();
