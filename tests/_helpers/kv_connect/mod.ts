/**
 * A KV Connect server for tests (in-process: {@link startKvConnectServer}; as a child process
 * that can be killed and restarted: {@link spawnKvConnectServer}).
 *
 * @module
 */
export {
  type KvConnectServer,
  type KvConnectServerOptions,
  type KvConnectStats,
  startKvConnectServer,
} from "./server.ts";
export {
  type KvConnectProcess,
  type SpawnKvConnectOptions,
  spawnKvConnectServer,
} from "./process.ts";
export { openKvConnect } from "./client.ts";
