/**
 * Opens the Deno KV that holds the fleet's breakers: a file, `:memory:`, the URL of a KV
 * Connect server (token in `DENO_KV_ACCESS_TOKEN`), or `null` for `Deno.openKv()`'s default
 * (on Deno Deploy, the deployment's shared KV).
 *
 * @module
 */
import type { Logger } from "./telemetry/mod.ts";

/** A lazily opened KV handle that can be reopened after trouble and closed once. */
export interface GatewayKv {
  /** Opens (or reopens after {@link GatewayKv.invalidate}) the KV; rejects when it cannot. */
  open(): Promise<Deno.Kv>;
  /** Closes the handle; later `open()` calls reject. Idempotent. */
  close(): void;
}

function isRemote(path: string): boolean {
  return path.startsWith("http://") || path.startsWith("https://");
}

async function ensureParentDirectory(path: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  if (slash <= 0) return;
  await Deno.mkdir(path.slice(0, slash), { recursive: true });
}

/**
 * Creates the KV opener for `kv.path`.
 *
 * @example
 * ```ts
 * const kv = openGatewayKv("./data/breakwater.kv", logger);
 * const handle = await kv.open();
 * ```
 */
export function openGatewayKv(path: string | null, logger: Logger): GatewayKv {
  let current: Deno.Kv | null = null;
  let closed = false;
  // The reason of the last failed open, logged once: the breaker reopens every second while KV
  // is away, and a wrong token or a server that refuses connections must be visible in the
  // log without one line per try.
  let lastFailure: string | null = null;
  return {
    async open() {
      if (closed) throw new Error("KV is closed");
      if (current !== null) {
        // A previous handle may have been closed under us (tests, lost file): drop it.
        try {
          current.close();
        } catch {
          // already closed
        }
        current = null;
      }
      if (path !== null && path !== ":memory:" && !isRemote(path)) {
        await ensureParentDirectory(path);
      }
      let kv: Deno.Kv;
      try {
        kv = path === null ? await Deno.openKv() : await Deno.openKv(path);
      } catch (error) {
        // Deno.openKv of a KV Connect URL performs the metadata exchange, so this carries the
        // server's answer ("... 401 Unauthorized: Invalid access token.") or the refused connect.
        const reason = error instanceof Error ? error.message : String(error);
        if (reason !== lastFailure && !closed) {
          lastFailure = reason;
          logger.warn("kv open failed", { path: path ?? "(default)", error: reason });
        }
        throw error;
      }
      if (closed) {
        kv.close();
        throw new Error("KV is closed");
      }
      current = kv;
      if (lastFailure !== null) {
        lastFailure = null;
        logger.info("kv opened", { path: path ?? "(default)" });
      } else {
        logger.debug("kv opened", { path: path ?? "(default)" });
      }
      return kv;
    },
    close() {
      closed = true;
      if (current !== null) {
        try {
          current.close();
        } catch {
          // already closed
        }
        current = null;
      }
    },
  };
}
