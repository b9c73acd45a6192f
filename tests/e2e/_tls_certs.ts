/**
 * Test certificates made with `openssl` in a temp folder: a CA, server certificates it signed
 * for `localhost` and `127.0.0.1` (each with its own serial and subject), and a key that
 * matches none of them. rustls (Deno's TLS) refuses a self-signed leaf used as its own CA, so
 * the chain is a real one: CA -> leaf.
 *
 * @module
 */

/** Paths of one server certificate and its key. */
export interface ServerCertFiles {
  /** PEM certificate (leaf only). */
  certFile: string;
  /** PEM private key. */
  keyFile: string;
  /** The serial as openssl prints it (`serial=` upper-case hex). */
  serial: string;
}

/** A CA in a temp folder that signs server certificates. */
export interface TestCa {
  /** The folder; remove it with {@link TestCa.remove}. */
  dir: string;
  /** The CA's PEM certificate, for `--cacert` and `caCerts`. */
  caFile: string;
  /** A PEM key that matches no certificate made here. */
  strayKeyFile: string;
  /** A new server certificate for localhost/127.0.0.1 with `commonName` as its subject CN. */
  issue(commonName: string): Promise<ServerCertFiles>;
  /** Removes the folder. */
  remove(): Promise<void>;
}

async function openssl(args: string[], cwd: string): Promise<string> {
  const output = await new Deno.Command("openssl", { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!output.success) {
    throw new Error(`openssl ${args[0]} failed: ${new TextDecoder().decode(output.stderr)}`);
  }
  return new TextDecoder().decode(output.stdout);
}

const EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** Makes a CA (and a stray key) in a new temp folder. */
export async function createTestCa(): Promise<TestCa> {
  const dir = await Deno.makeTempDir({ prefix: "breakwater-tls-" });
  await openssl([
    "req",
    "-x509",
    ...EC_KEY,
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=Breakwater Test CA",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  ], dir);
  await openssl([
    "genpkey",
    "-algorithm",
    "EC",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-out",
    "stray.key",
  ], dir);
  let issued = 0;
  return {
    dir,
    caFile: `${dir}/ca.pem`,
    strayKeyFile: `${dir}/stray.key`,
    async issue(commonName) {
      const name = `leaf${++issued}`;
      await openssl([
        "req",
        ...EC_KEY,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.csr`,
        "-subj",
        `/CN=${commonName}`,
      ], dir);
      await Deno.writeTextFile(
        `${dir}/${name}.ext`,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n" +
          "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
      );
      await openssl([
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        `${name}.ext`,
        "-out",
        `${name}.pem`,
      ], dir);
      const serial = (await openssl(["x509", "-in", `${name}.pem`, "-noout", "-serial"], dir))
        .trim().replace(/^serial=/, "");
      return { certFile: `${dir}/${name}.pem`, keyFile: `${dir}/${name}.key`, serial };
    },
    remove: () => Deno.remove(dir, { recursive: true }),
  };
}
