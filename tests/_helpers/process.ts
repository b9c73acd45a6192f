/**
 * Small shared test tools: a seeded random source and a process's memory as Linux reports it.
 *
 * @module
 */

/** mulberry32: a small seeded PRNG, so generated inputs are the same on every run. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Resident memory of `pid` now (`rss`) and at its peak (`peak`), in KiB. */
export function memoryKiB(pid: number): { rss: number; peak: number } {
  // Deno gates /proc/<pid> behind --allow-all; `cat` under --allow-run reads it just as well.
  const output = new Deno.Command("cat", { args: [`/proc/${pid}/status`] }).outputSync();
  const status = new TextDecoder().decode(output.stdout);
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1]);
  return { rss: field("VmRSS"), peak: field("VmHWM") };
}

/** A response streaming `size` bytes in 64 KiB chunks, with its length declared. */
export function streamedBody(size: number): Response {
  const chunk = new Uint8Array(64 * 1024).fill(7);
  let sent = 0;
  return new Response(
    new ReadableStream({
      pull(controller) {
        if (sent >= size) return controller.close();
        controller.enqueue(chunk);
        sent += chunk.byteLength;
      },
    }),
    { headers: { "content-length": String(size) } },
  );
}
