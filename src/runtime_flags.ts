/**
 * V8 flags the gateway runs with, wherever it is started: `deno task start` (src/launch.ts),
 * the image's CMD, `deno task demo` and the benchmarks pass them (tests check the last three
 * against this list). An app embedding the gateway should start Deno with them too (README,
 * "Embedding").
 *
 * `--no-allocation-site-pretenuring`: V8 watches which allocation sites' objects survive a
 * young-generation collection and, past a survival ratio, allocates that site's objects in the
 * old generation from then on (pretenuring; v8/src/heap/pretenuring-handler.cc). Under a
 * gateway's load the request path's sites (request state, header pairs, abort listeners) are
 * caught in flight during warm-up and pretenured for good: every request then left ~2.3 KiB in
 * the old generation for the next full collection, and the old-to-new pointers from those
 * objects made each scavenge walk a large remembered set: 20-30 ms per scavenge pinned to one
 * core (`--trace-gc`), against 0.5-3 ms with pretenuring off. Measured with the proxy pinned to
 * one core, alternating builds (wrk -t2, 4 s, 5-6 repetitions): CPU per request 0.89x at 32
 * connections and 0.91x at 128, p99 at 32 connections about halved. Objects that really live
 * long (pools, config, histograms) reach the old generation by surviving, as before.
 *
 * @module
 */

/** The `deno run` flags that set them, before the main module. */
export const GATEWAY_V8_FLAGS: readonly string[] = ["--v8-flags=--no-allocation-site-pretenuring"];
