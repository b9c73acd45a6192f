/**
 * Tools for the upstream clients' memory and streaming tests: a `Deno.serve` upstream in a child
 * process (so its memory is not the client's), a peak-RSS reset, and a byte-stream body.
 *
 * @module
 */
import assert from "node:assert/strict";

/** A Deno.serve upstream in a child process, so its memory is not the client's. */
export async function childUpstream(): Promise<{ origin: string; close(): Promise<void> }> {
  const code = `
    const chunk = new Uint8Array(64 * 1024).fill(7);
    Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: ({ port }) => console.log(port) },
      async (request) => {
        const size = Number(new URL(request.url).searchParams.get("size") ?? 0);
        if (request.body === null) {
          let sent = 0;
          const body = new ReadableStream({
            pull(controller) {
              if (sent >= size) return controller.close();
              controller.enqueue(chunk);
              sent += chunk.length;
            },
          });
          return new Response(body, { headers: { "content-length": String(size) } });
        }
        let total = 0;
        for await (const part of request.body) total += part.length;
        return new Response(String(total));
      });`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const timer = setTimeout(() => child.kill(), 10_000);
  let port = "";
  try {
    while (!port.includes("\n")) {
      const { done, value } = await reader.read();
      if (done) throw new Error("the upstream child exited before listening");
      port += value;
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel();
  }
  return {
    origin: `http://127.0.0.1:${port.trim()}`,
    async close() {
      child.kill();
      await child.status;
    },
  };
}

/** Resets this process's peak RSS (Linux `clear_refs` 5), so a later peak is this step's own. */
export function resetPeakRss(): void {
  const reset = new Deno.Command("sh", {
    args: ["-c", `echo 5 > /proc/${Deno.pid}/clear_refs`],
  }).outputSync();
  assert.ok(reset.success, "cannot reset the peak RSS");
}

/** A byte stream of `size` ASCII bytes (byte i is `i % 128`) filling whatever view it is given. */
export function byteStream(size: number): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    type: "bytes",
    autoAllocateChunkSize: 16 * 1024,
    pull(controller) {
      const byobRequest = controller.byobRequest!;
      if (sent >= size) {
        controller.close();
        byobRequest.respond(0);
        return;
      }
      const view = byobRequest.view as Uint8Array;
      const n = Math.min(view.byteLength, size - sent);
      for (let i = 0; i < n; i++) view[i] = (sent + i) % 128;
      sent += n;
      byobRequest.respond(n);
    },
  }) as ReadableStream<Uint8Array>;
}
