/**
 * Starts the workers, restarts one that crashes (with backoff, logged) and stops them all on
 * drain. A crashed worker never takes the instance down: its error event is handled here, and
 * the kernel spreads new connections over the listeners still open (`SO_REUSEPORT`).
 *
 * @module
 */
import type { Logger } from "../telemetry/access_log.ts";
import type { FromWorker, ToWorker } from "./protocol.ts";

/** The first restart waits this long; each crash in a row doubles it... */
export const RESTART_BASE_MS = 100;
/** ...up to this. */
export const RESTART_MAX_MS = 5000;
/** A worker that ran this long before crashing restarts after the base delay again. */
export const STABLE_AFTER_MS = 10_000;

/** Options of {@link createSupervisor}. */
export interface SupervisorOptions {
  /** How many workers. */
  count: number;
  /** The `start` message for worker `index` (read at each start: the config may have changed). */
  startMessage: (index: number) => ToWorker & { type: "start" };
  /** Every message from a worker. */
  onMessage: (index: number, message: FromWorker) => void;
  /** Called when worker `index` is gone: crashed (with its error), or terminated (none). */
  onGone: (index: number, error?: string) => void;
  logger: Logger;
  /** The worker module (default `worker_main.ts` beside this file). */
  moduleUrl?: string;
}

/** The running workers. */
export interface Supervisor {
  /** Starts worker `index` (the first worker alone first when the port is not known yet). */
  start(index: number): void;
  /** Sends to one worker, if it runs. */
  postTo(index: number, message: ToWorker): void;
  /** Sends to every running worker. */
  broadcast(message: ToWorker): void;
  /** Workers running now. */
  running(): number;
  /** No restarts from now on (the instance is draining). */
  stopRestarting(): void;
  /** Terminates every worker at once. */
  terminateAll(): void;
}

interface Slot {
  worker: Worker | null;
  startedAtMs: number;
  crashesInRow: number;
  restartTimer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Creates the supervisor; no worker starts until {@link Supervisor.start}.
 *
 * @example
 * ```ts
 * const supervisor = createSupervisor({ count: 2, startMessage, onMessage, onGone, logger });
 * supervisor.start(0);
 * ```
 */
export function createSupervisor(options: SupervisorOptions): Supervisor {
  const moduleUrl = options.moduleUrl ?? new URL("./worker_main.ts", import.meta.url).href;
  const slots: Slot[] = Array.from({ length: options.count }, () => ({
    worker: null,
    startedAtMs: 0,
    crashesInRow: 0,
    restartTimer: undefined,
  }));
  let restarting = true;

  const start = (index: number) => {
    const slot = slots[index];
    const worker = new Worker(moduleUrl, { type: "module", name: `breakwater-worker-${index}` });
    slot.worker = worker;
    slot.startedAtMs = Date.now();
    worker.onmessage = (event: MessageEvent<FromWorker>) => options.onMessage(index, event.data);
    const crashed = (event: Event, error: unknown) => {
      // Handled here so the error does not propagate to the main thread and end the process.
      event.preventDefault();
      if (slot.worker !== worker) return;
      worker.terminate();
      slot.worker = null;
      options.onGone(index, String(error));
      const livedMs = Date.now() - slot.startedAtMs;
      slot.crashesInRow = livedMs >= STABLE_AFTER_MS ? 1 : slot.crashesInRow + 1;
      const restartInMs = Math.min(RESTART_MAX_MS, RESTART_BASE_MS * 2 ** (slot.crashesInRow - 1));
      options.logger.error("worker crashed", {
        worker: index,
        error: String(error),
        livedMs,
        restartInMs: restarting ? restartInMs : null,
      });
      if (!restarting) return;
      slot.restartTimer = setTimeout(() => {
        slot.restartTimer = undefined;
        if (!restarting) return;
        options.logger.info("worker restarting", { worker: index });
        start(index);
      }, restartInMs);
    };
    worker.onerror = (event) => crashed(event, event.message ?? event.error);
    worker.onmessageerror = (event) => crashed(event, "a message could not be read");
    worker.postMessage(options.startMessage(index));
  };

  return {
    start,
    postTo(index, message) {
      slots[index]?.worker?.postMessage(message);
    },
    broadcast(message) {
      for (const slot of slots) slot.worker?.postMessage(message);
    },
    running: () => slots.filter((slot) => slot.worker !== null).length,
    stopRestarting() {
      restarting = false;
      for (const slot of slots) clearTimeout(slot.restartTimer);
    },
    terminateAll() {
      restarting = false;
      for (const [index, slot] of slots.entries()) {
        clearTimeout(slot.restartTimer);
        if (slot.worker === null) continue;
        slot.worker.terminate();
        slot.worker = null;
        options.onGone(index);
      }
    },
  };
}
