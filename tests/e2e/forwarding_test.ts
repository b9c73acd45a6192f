/**
 * The request path end to end: a real gateway (in this process, on loopback) in front of real
 * upstream servers, driven by a real HTTP client.
 */
import { forwardingCases } from "./_forwarding_cases.ts";

forwardingCases("fetch");
