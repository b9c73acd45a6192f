/**
 * A client process for processes_test.ts: opens the KV Connect URL (token from
 * `DENO_KV_ACCESS_TOKEN`, as a gateway would) and increments one counter `iterations` times
 * with a compare-and-set on its versionstamp, re-reading after every lost race. Prints
 * `{"committed": n, "conflicts": n}`.
 */
const [url, iterationsText, startAtText] = Deno.args;
const kv = await Deno.openKv(url);
const key = ["counter"];
// Start together, so the processes really race.
await new Promise((resolve) => setTimeout(resolve, Math.max(0, Number(startAtText) - Date.now())));
let committed = 0;
let conflicts = 0;
while (committed < Number(iterationsText)) {
  const current = await kv.get<number>(key);
  const result = await kv.atomic().check(current).set(key, (current.value ?? 0) + 1).commit();
  if (result.ok) committed++;
  else conflicts++;
}
kv.close();
console.log(JSON.stringify({ committed, conflicts }));
