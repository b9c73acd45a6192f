/**
 * Certificates for upstream TLS tests, made with `openssl` in a temp folder: a private server
 * CA and a server certificate it signed (subjectAltName `IP:127.0.0.1`, `DNS:localhost`), and a
 * separate client CA with a client certificate (extendedKeyUsage `clientAuth`) for mTLS. rustls
 * (Deno's TLS) wants real chains (CA -> leaf, v3 extensions), so these are.
 *
 * @module
 */
import { waitFor } from "../_helpers/wait.ts";

/** One folder of PEM files; `remove()` deletes it. */
export interface UpstreamCerts {
  dir: string;
  /** Server CA certificate (what `tls.caFile` names). */
  caFile: string;
  /** Server certificate and key, for the upstream. */
  serverCertFile: string;
  serverKeyFile: string;
  /** Client CA certificate (what an mTLS upstream trusts). */
  clientCaFile: string;
  /** Client certificate and key (what `tls.certFile` and `tls.keyFile` name). */
  clientCertFile: string;
  clientKeyFile: string;
  /** Their contents. */
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  remove(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  const output = await new Deno.Command("openssl", { args, cwd, stdout: "null", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(output.stderr)}`);
  }
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

async function makeCa(cwd: string, name: string, subject: string): Promise<void> {
  await openssl([
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-subj",
    subject,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], cwd);
}

async function makeLeaf(
  cwd: string,
  ca: string,
  name: string,
  subject: string,
  extensions: string,
): Promise<void> {
  await Deno.writeTextFile(`${cwd}/${name}.ext`, extensions);
  await openssl([
    "req",
    ...EC_KEY,
    "-keyout",
    `${name}.key`,
    "-out",
    `${name}.csr`,
    "-subj",
    subject,
  ], cwd);
  await openssl([
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    `${ca}.pem`,
    "-CAkey",
    `${ca}.key`,
    "-CAcreateserial",
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-extfile",
    `${name}.ext`,
  ], cwd);
}

/** Makes both CAs and both leaves in a new temp folder. */
export async function makeUpstreamCerts(): Promise<UpstreamCerts> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-upstream-tls-" });
  try {
    await makeCa(dir, "ca", "/CN=Breakwater Upstream Test CA");
    await makeLeaf(
      dir,
      "ca",
      "server",
      "/CN=localhost",
      "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" +
        "extendedKeyUsage=serverAuth\n",
    );
    await makeCa(dir, "client-ca", "/CN=Breakwater Client Test CA");
    await makeLeaf(
      dir,
      "client-ca",
      "client",
      "/CN=breakwater-gateway",
      "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
  } catch (error) {
    await Deno.remove(dir, { recursive: true });
    throw error;
  }
  const file = (name: string) => `${dir}/${name}`;
  const read = (name: string) => Deno.readTextFileSync(file(name));
  return {
    dir,
    caFile: file("ca.pem"),
    serverCertFile: file("server.pem"),
    serverKeyFile: file("server.key"),
    clientCaFile: file("client-ca.pem"),
    clientCertFile: file("client.pem"),
    clientKeyFile: file("client.key"),
    ca: read("ca.pem"),
    serverCert: read("server.pem"),
    serverKey: read("server.key"),
    clientCert: read("client.pem"),
    clientKey: read("client.key"),
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}

/**
 * An upstream that requires a client certificate signed by `clientCaFile`: `openssl s_server
 * -Verify 1 -www` (Deno's TLS listeners cannot ask for client certificates). It answers each
 * connection's `GET` with `HTTP/1.0 200 ok` and a status page naming the TLS session, then
 * closes it; a client without a certificate gets a handshake alert.
 */
export interface MtlsUpstream {
  origin: string;
  port: number;
  /** Everything s_server printed (its accept and verify lines). */
  output(): string;
  close(): Promise<void>;
}

/** Starts `openssl s_server` on 127.0.0.1, port 0; resolves once it accepts. */
export async function startMtlsUpstream(
  certs: UpstreamCerts,
  timeoutMs = 10_000,
): Promise<MtlsUpstream> {
  return await startOpensslUpstream(certs, [
    "-CAfile",
    certs.clientCaFile,
    "-Verify",
    "1",
    "-verify_return_error",
  ], timeoutMs);
}

/**
 * `openssl s_server -www` with the server certificate and `extraArgs` (e.g. `-tlsextdebug`,
 * which prints each TLS extension a client sends, SNI among them).
 */
export async function startOpensslUpstream(
  certs: UpstreamCerts,
  extraArgs: string[],
  timeoutMs = 10_000,
): Promise<MtlsUpstream> {
  const child = new Deno.Command("openssl", {
    args: [
      "s_server",
      "-accept",
      "127.0.0.1:0",
      "-cert",
      certs.serverCertFile,
      "-key",
      certs.serverKeyFile,
      ...extraArgs,
      "-www",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const drain = (stream: ReadableStream<Uint8Array>) =>
    (async () => {
      for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
    })();
  const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
  const close = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // exited already
    }
    await child.status;
    await drained;
  };
  let port = 0;
  try {
    await waitFor(() => {
      const match = /ACCEPT 127\.0\.0\.1:(\d+)/.exec(text);
      if (match !== null) port = Number(match[1]);
      return port !== 0;
    }, { timeoutMs, what: "openssl s_server to accept" });
  } catch (error) {
    await close();
    throw new Error(`openssl s_server did not start: ${text}`, { cause: error });
  }
  return { origin: `https://127.0.0.1:${port}`, port, output: () => text, close };
}
