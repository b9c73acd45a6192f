/**
 * Broken upstreams on raw sockets: truncated chunked bodies, short bodies, garbage status lines
 * and malformed headers, and upstreams that close idle keep-alive connections (the stale pooled
 * connection must be retried on a fresh one or answered 502, never hang).
 */
import { upstreamFailureCases } from "./_upstream_failure_cases.ts";

upstreamFailureCases("fetch");
