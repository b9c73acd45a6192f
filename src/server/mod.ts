/**
 * Breakwater's HTTP/1.1 server for the public port: strict parsing, head/idle/body timeouts,
 * streamed bodies with backpressure, keep-alive, pipelining and graceful shutdown over
 * `Deno.listen`. See {@link serveHttp1}.
 *
 * @module
 */
export {
  type Handler,
  type Http1Server,
  type Http1ServerOptions,
  serveHttp1,
  type ServeInfo,
} from "./http1_server.ts";
