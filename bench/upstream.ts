/**
 * The benchmark upstream: a tiny `Deno.serve` in its own process so every proxy under test
 * talks to the same server.
 *
 * - `GET /big`: 100 MiB streamed in 64 KiB chunks (download test).
 * - `GET /mib`: 1 MiB with its `content-length` (large bodies under wrk).
 * - `POST` anything: reads the body, answers `{"bytes": N}` (upload test).
 * - anything else: a ~100-byte JSON.
 *
 * Run: deno run --allow-net bench/upstream.ts PORT
 *
 * @module
 */
const port = Number(Deno.args[0] ?? 9100);
const SMALL = JSON.stringify({
  id: 42,
  name: "breakwater",
  ok: true,
  tags: ["edge", "gateway"],
  at: "2026-01-01T00:00:00Z",
});
const BIG_BYTES = 100 * 1024 * 1024;
const CHUNK = new Uint8Array(64 * 1024).fill(120);
const MIB = new Uint8Array(1024 * 1024).fill(121);

function bigBody(): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= BIG_BYTES) return controller.close();
      controller.enqueue(CHUNK.slice());
      sent += CHUNK.length;
    },
  });
}

Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (request) => {
  if (request.method === "POST" || request.method === "PUT") {
    let bytes = 0;
    if (request.body) { for await (const chunk of request.body) bytes += chunk.length; }
    return Response.json({ bytes });
  }
  if (request.url.endsWith("/mib")) {
    return new Response(MIB, { headers: { "content-type": "application/octet-stream" } });
  }
  if (request.url.endsWith("/big")) {
    return new Response(bigBody(), {
      headers: { "content-type": "application/octet-stream", "content-length": String(BIG_BYTES) },
    });
  }
  return new Response(SMALL, { headers: { "content-type": "application/json" } });
});
console.log(JSON.stringify({ msg: "listening", port }));
