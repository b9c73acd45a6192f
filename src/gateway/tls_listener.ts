/**
 * The gateway side of `listen.tls` (README, "TLS and HTTP/2"): reading and checking the PEM
 * files with errors that name the config field, and the plain port's redirect to HTTPS.
 * The server itself is `server/tls_server.ts`.
 *
 * @module
 */
import { ConfigError, type ConfigProblem, type GatewayConfig } from "../config/schema.ts";
import { problemResponse } from "../problem.ts";
import { isValidHost } from "../routing/request_target.ts";
import type { ServeInfo } from "../server/http1_server.ts";
import { type CertificatePair, checkCertificatePair } from "../server/tls_server.ts";

/** `listen.tls` of a config that has one. */
export type ListenTls = NonNullable<GatewayConfig["listen"]["tls"]>;

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----/;
const PEM_PRIVATE_KEY = /-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----/;

function readPem(
  field: "certFile" | "keyFile",
  path: string,
  problems: ConfigProblem[],
): string | null {
  const where = `listen.tls.${field}`;
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.NotCapable
      ? "Deno was not granted read access to it (--allow-read)"
      : error instanceof Deno.errors.PermissionDenied
      ? "not readable by this user"
      : (error as Error).message;
    problems.push({ path: where, message: `cannot read ${path}: ${reason}` });
    return null;
  }
  const [pattern, what] = field === "certFile"
    ? [PEM_CERTIFICATE, "a PEM certificate (-----BEGIN CERTIFICATE-----)"]
    : [PEM_PRIVATE_KEY, "a PEM private key (-----BEGIN PRIVATE KEY-----)"];
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----/.test(text)) {
    problems.push({ path: where, message: `${path} is encrypted; give the key unencrypted` });
    return null;
  }
  if (!pattern.test(text)) {
    problems.push({ path: where, message: `${path} is not ${what}` });
    return null;
  }
  return text;
}

/**
 * Reads `listen.tls.certFile` and `listen.tls.keyFile` and checks that they make a pair rustls
 * accepts (at start-up, where a problem is exit 2, and at every reload, where it refuses the
 * reload and the running certificate keeps serving).
 *
 * @throws {ConfigError} naming the field: a missing or unreadable file, one that is not PEM,
 *   or a key that does not match the certificate
 * @example
 * ```ts
 * const pair = readCertificatePair({ certFile: "tls/cert.pem", keyFile: "tls/key.pem", port: null, http2: true });
 * serveTls({ port: 8443, ...pair }, handler);
 * ```
 */
export function readCertificatePair(tls: ListenTls): CertificatePair {
  const problems: ConfigProblem[] = [];
  const cert = readPem("certFile", tls.certFile, problems);
  const key = readPem("keyFile", tls.keyFile, problems);
  if (cert === null || key === null) throw new ConfigError(problems);
  try {
    checkCertificatePair({ cert, key });
  } catch (error) {
    const message = String((error as Error).message ?? error);
    // rustls: "keys may not be consistent: KeyMismatch", "No keys found in key data", ...
    const mismatch = /mismatch|not be consistent/i.test(message);
    throw new ConfigError([{
      path: mismatch ? "listen.tls.keyFile" : "listen.tls.certFile",
      message: mismatch
        ? `${tls.keyFile} is not the key of the certificate in listen.tls.certFile ` +
          `(${tls.certFile})`
        : `${tls.certFile} with ${tls.keyFile} was refused: ${message}`,
    }]);
  }
  return { cert, key };
}

/** Paths that stay on the plain port when it redirects: load balancers probe over plain HTTP. */
const PLAIN_PATHS = new Set(["/healthz", "/readyz"]);

/**
 * A handler for the plain port that answers 308 with the same target on the TLS port
 * (RFC 9110 §15.4.9: the method and body are kept), except `/healthz` and `/readyz`, which
 * `next` answers. The Host is checked first and only its name is reused, so a hostile Host
 * cannot steer the redirect elsewhere than this gateway's name as the client already used it.
 *
 * @param tlsPort the port the TLS listener is bound to
 * @param next the gateway's own handler, for the health routes
 * @example
 * ```ts
 * serveHttp1({ port: 8080 }, redirectToHttps(8443, gateway.app.fetch));
 * ```
 */
export function redirectToHttps(
  tlsPort: number,
  next: (request: Request, info: ServeInfo) => Response | Promise<Response>,
): (request: Request, info: ServeInfo) => Response | Promise<Response> {
  const portSuffix = tlsPort === 443 ? "" : `:${tlsPort}`;
  return (request, info) => {
    const target = info.target;
    const path = target.split("?", 1)[0];
    if (PLAIN_PATHS.has(path)) return next(request, info);
    const host = request.headers.get("host");
    if (host === null || host === "" || !isValidHost(host) || target === "*") {
      return problemResponse("bad_request", {
        status: 400,
        detail: "a redirect to HTTPS needs a valid Host header",
      });
    }
    return new Response(null, {
      status: 308,
      headers: {
        location: `https://${hostName(host)}${portSuffix}${target}`,
        "content-length": "0",
      },
    });
  };
}

/** The Host without its port (`[::1]:80` -> `[::1]`, `a.example:80` -> `a.example`). */
export function hostName(host: string): string {
  if (host.startsWith("[")) return host.slice(0, host.indexOf("]") + 1);
  const colon = host.indexOf(":");
  return colon === -1 ? host : host.slice(0, colon);
}
