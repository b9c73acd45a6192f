/**
 * Swapping configs while the gateway serves: one reload at a time, each building the next
 * generation from the one in force (unchanged services keep their runtimes) and retiring the
 * previous one once its requests finished.
 *
 * @module
 */
import { ConfigError, formatProblem, type GatewayConfig } from "../config/schema.ts";
import type { Logger } from "../telemetry/mod.ts";
import {
  buildGeneration,
  type Generation,
  type GenerationShared,
  retireGeneration,
} from "./generation.ts";
import { planReload } from "./reload.ts";

/** What a reload did, as `POST /admin/reload` answers it. */
export type ReloadResult =
  | {
    ok: true;
    /** Services routed from now on that were not before. */
    added: string[];
    /** Services no longer routed (their requests in flight finish). */
    removed: string[];
    /** Services with new settings. */
    changed: string[];
    /** Restart-only keys that differ in the file; the running values are kept. */
    ignored: string[];
  }
  | {
    ok: false;
    /** One line per problem, as start-up prints them. */
    problems: string[];
  };

/** The generation in force, behind one reference every request reads once. */
export interface GenerationCell {
  /** The generation new requests use. */
  current: Generation;
}

/** What {@link createReloader} needs. */
export interface ReloaderDeps {
  /** The generation in force; a reload replaces it. */
  cell: GenerationCell;
  /** Parts every generation shares. */
  shared: GenerationShared;
  /** Settles once the first generation started; reloads wait for it. */
  ready: Promise<void>;
  /** Aborted when the gateway closes: retirements stop waiting. */
  closing: AbortSignal;
  /** Reads and validates the config file, when there is one. */
  readConfig?: () => GatewayConfig;
  /** Where reloads are logged. */
  logger: Logger;
}

/** Reloads, one at a time. */
export interface Reloader {
  /** Swaps in a validated config. */
  reload(config: GatewayConfig): Promise<ReloadResult & { ok: true }>;
  /** Reads the file and reloads it; an invalid one is refused and logged. */
  reloadConfig(): Promise<ReloadResult>;
  /** Settles once no reload runs. */
  settled(): Promise<void>;
  /** Settles once every retiring generation was closed (abort `closing` to cut it short). */
  retired(): Promise<void>;
}

/**
 * Creates the reloader of a gateway.
 *
 * @example
 * ```ts
 * const reloader = createReloader({ cell, shared, ready, closing: signal, logger });
 * await reloader.reload(nextConfig); // { ok: true, added: [...], removed: [...], ... }
 * ```
 */
export function createReloader(deps: ReloaderDeps): Reloader {
  const { cell, shared, logger } = deps;
  const retiring = new Set<Promise<void>>();
  let reloading: Promise<unknown> = Promise.resolve();

  const swap = async (next: GatewayConfig): Promise<ReloadResult & { ok: true }> => {
    await deps.ready.catch(() => {});
    // A closing gateway builds nothing new: its parts are being closed.
    if (deps.closing.aborted) throw new Error("the gateway is closing; reload refused");
    const plan = planReload(cell.current.config, next);
    if (plan.ignored.length > 0) {
      logger.warn("config keys need a restart; the running values are kept", {
        keys: plan.ignored,
      });
    }
    const previous = cell.current;
    const built = buildGeneration(plan.config, { previous, plan }, shared);
    // A new breaker loads the fleet's state from KV before it decides for anyone.
    if (built.breaker !== previous.breaker) await built.breaker.start();
    cell.current = built;
    const retired = retireGeneration(previous, shared, { signal: deps.closing }).finally(() =>
      retiring.delete(retired)
    );
    retiring.add(retired);
    const { added, removed, changed, ignored } = plan;
    const result = { ok: true as const, added, removed, changed, ignored };
    logger.info("config reloaded", { ...result });
    return result;
  };

  const reload = (next: GatewayConfig): Promise<ReloadResult & { ok: true }> => {
    const run = reloading.then(() => swap(next));
    reloading = run.catch(() => {});
    return run;
  };

  return {
    reload,
    async reloadConfig() {
      if (deps.readConfig === undefined) {
        return { ok: false, problems: ["reload is not available: the gateway reads no file"] };
      }
      let next: GatewayConfig;
      try {
        next = deps.readConfig();
      } catch (error) {
        if (!(error instanceof ConfigError)) throw error;
        const problems = error.problems.map(formatProblem);
        logger.error("config reload refused; the running config keeps serving", { problems });
        for (const problem of problems) logger.error(problem);
        return { ok: false, problems };
      }
      return await reload(next);
    },
    async settled() {
      await reloading;
    },
    async retired() {
      await Promise.all(retiring);
    },
  };
}
