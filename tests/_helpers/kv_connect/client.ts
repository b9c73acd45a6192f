/**
 * Opening a KV Connect server from a test: `Deno.openKv(url)` reads the token from the
 * `DENO_KV_ACCESS_TOKEN` variable at the moment it opens, and the environment is the whole
 * process's, so the variable is set only around the open and then put back.
 *
 * @module
 */

/**
 * Opens `url` with `accessToken`, as a gateway with `DENO_KV_ACCESS_TOKEN` set would.
 *
 * @example
 * ```ts
 * const kv = await openKvConnect(server.url, "s3cret-token");
 * await kv.set(["a"], 1);
 * kv.close();
 * ```
 */
export async function openKvConnect(url: string, accessToken: string): Promise<Deno.Kv> {
  const previous = Deno.env.get("DENO_KV_ACCESS_TOKEN");
  Deno.env.set("DENO_KV_ACCESS_TOKEN", accessToken);
  try {
    return await Deno.openKv(url);
  } finally {
    if (previous === undefined) Deno.env.delete("DENO_KV_ACCESS_TOKEN");
    else Deno.env.set("DENO_KV_ACCESS_TOKEN", previous);
  }
}
