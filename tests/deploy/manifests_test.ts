/**
 * The Kubernetes and compose examples agree with the gateway: each embedded config passes
 * `parseConfig`, and probe paths, ports, grace periods, mounts, the KV URL and the shared token
 * match that config, the image and each other.
 */
import assert from "node:assert/strict";
import { parse, parseAllDocuments } from "yaml";
import { type GatewayConfig, parseConfig } from "../../src/config/schema.ts";
import { permissionsFor } from "../../src/launch.ts";
import { envOf, last, readDockerfile } from "./_dockerfile.ts";

const ROOT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");
const K8S = `${ROOT}/deploy/kubernetes`;
const COMPOSE = `${ROOT}/deploy/compose`;
const image = readDockerfile(`${ROOT}/Dockerfile`).at(-1)!;
/** Where the image reads its config, and what it may read (the CMD's derivation). */
const IMAGE_CONFIG_PATH = envOf(image).BREAKWATER_CONFIG;
const IMAGE_READ_PATHS = permissionsFor(IMAGE_CONFIG_PATH, null, last(image, "WORKDIR")).read;

// deno-lint-ignore no-explicit-any
type Manifest = Record<string, any>;

function yamlDocuments(path: string): Manifest[] {
  return parseAllDocuments(Deno.readTextFileSync(path)).map((document) => {
    assert.deepEqual(document.errors, [], `${path}: ${document.errors.join("; ")}`);
    return document.toJS();
  });
}

function k8sManifests(): Manifest[] {
  const kustomization = parse(Deno.readTextFileSync(`${K8S}/kustomization.yaml`));
  return (kustomization.resources as string[]).flatMap((file) => yamlDocuments(`${K8S}/${file}`));
}

function find(manifests: Manifest[], kind: string, name: string): Manifest {
  const found = manifests.find((m) => m.kind === kind && m.metadata?.name === name);
  assert.ok(found, `no ${kind} ${name}`);
  return found;
}

/** Milliseconds the gateway may take to stop after SIGTERM. */
function drainMs(config: GatewayConfig): number {
  return config.shutdown.drainDelayMs + config.shutdown.timeoutMs;
}

/** `35s`, `1m30s`, `500ms` (compose durations) -> milliseconds. */
function durationMs(text: string): number {
  const units: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001 };
  let total = 0;
  const rest = text.replace(/(\d+(?:\.\d+)?)(h|ms|m|s|us)/g, (_, value, unit) => {
    total += Number(value) * units[unit];
    return "";
  });
  assert.equal(rest, "", `not a duration: ${text}`);
  return total;
}

function kubernetesConfig(): GatewayConfig {
  const kustomization = parse(Deno.readTextFileSync(`${K8S}/kustomization.yaml`));
  const generator = kustomization.configMapGenerator.find((g: Manifest) =>
    g.name === "breakwater-config"
  );
  assert.deepEqual(generator.files, ["breakwater.json"]);
  return parseConfig(JSON.parse(Deno.readTextFileSync(`${K8S}/breakwater.json`)));
}

Deno.test("kubernetes: probes, ports, config mount and grace period agree with the config", () => {
  const config = kubernetesConfig();
  const manifests = k8sManifests();
  const deployment = find(manifests, "Deployment", "breakwater");
  const pod = deployment.spec.template.spec;
  const [container] = pod.containers;
  const port = (name: string) =>
    container.ports.find((p: Manifest) => p.name === name).containerPort;

  // The image's PORT env overrides listen.port, so the two must agree.
  assert.equal(port("http"), config.listen.port);
  assert.equal(
    container.env.find((e: Manifest) => e.name === "PORT").value,
    String(config.listen.port),
  );
  assert.equal(port("admin"), config.admin.port);
  assert.equal(pod.securityContext.runAsUser, 1993);
  assert.equal(
    deployment.spec.template.metadata.annotations["prometheus.io/port"],
    String(config.admin.port),
  );

  assert.deepEqual(container.readinessProbe.httpGet, { path: "/readyz", port: "http" });
  assert.deepEqual(container.livenessProbe.httpGet, { path: "/healthz", port: "http" });

  // SIGKILL must not come before the preStop sleep plus the whole drain.
  const sleep = container.lifecycle.preStop.exec.command;
  assert.equal(sleep[0], "sleep");
  const preStopMs = Number(sleep[1]) * 1000;
  assert.ok(
    pod.terminationGracePeriodSeconds * 1000 > preStopMs + drainMs(config),
    `grace ${pod.terminationGracePeriodSeconds}s <= preStop ${preStopMs} ms + drain ${
      drainMs(config)
    } ms`,
  );

  // The cgroup limits the gateway reads: both set.
  assert.ok(container.resources.limits.cpu);
  assert.ok(container.resources.limits.memory);

  // The config is mounted as a file where the image's --allow-read points.
  const mount = container.volumeMounts.find((m: Manifest) => m.name === "config");
  assert.equal(mount.mountPath, IMAGE_CONFIG_PATH);
  assert.ok(IMAGE_READ_PATHS.includes(mount.mountPath));
  assert.equal(mount.subPath, "breakwater.json");
  const volume = pod.volumes.find((v: Manifest) => v.name === "config");
  assert.equal(volume.configMap.name, "breakwater-config");

  const service = find(manifests, "Service", "breakwater");
  assert.deepEqual(service.spec.selector, deployment.spec.selector.matchLabels);
  assert.deepEqual(service.spec.ports.map((p: Manifest) => p.targetPort), ["http"]);
});

Deno.test("kubernetes: the gateways reach the denokv Service with the token it checks", () => {
  const config = kubernetesConfig();
  const manifests = k8sManifests();
  const kvUrl = new URL(config.kv.path!);
  const kvService = find(manifests, "Service", kvUrl.hostname);
  assert.equal(kvService.spec.ports[0].port, Number(kvUrl.port));
  const kvDeployment = manifests.find((m) =>
    m.kind === "Deployment" &&
    JSON.stringify(m.spec.selector.matchLabels) === JSON.stringify(kvService.spec.selector)
  )!;
  assert.equal(kvDeployment.spec.replicas, 1, "denokv is a single SQLite writer");
  const [kv] = kvDeployment.spec.template.spec.containers;
  assert.match(kv.image, /^ghcr\.io\/denoland\/denokv:/);
  assert.equal(kv.ports[0].containerPort, 4512); // denokv serve's default --addr port
  assert.equal(kvService.spec.ports[0].targetPort, kv.ports[0].name);

  const tokenOf = (container: Manifest) =>
    container.env.find((e: Manifest) => e.name === "DENO_KV_ACCESS_TOKEN").valueFrom.secretKeyRef;
  const [gateway] = find(manifests, "Deployment", "breakwater").spec.template.spec.containers;
  assert.deepEqual(tokenOf(gateway), tokenOf(kv));
  assert.ok(find(manifests, "Deployment", "breakwater").spec.replicas > 1);
});

Deno.test("kubernetes: kustomize renders the ConfigMap the Deployment mounts", async (t) => {
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command("kubectl", {
      args: ["kustomize", K8S],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    await t.step({ name: "kubectl is not installed here", ignore: true, fn: () => {} });
    return;
  }
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const rendered = parseAllDocuments(new TextDecoder().decode(output.stdout)).map((d) => d.toJS());
  const configMap = rendered.find((m) => m.kind === "ConfigMap");
  parseConfig(JSON.parse(configMap.data["breakwater.json"]));
  const deployment = rendered.find((m) =>
    m.kind === "Deployment" && m.metadata.name === "breakwater"
  );
  const volume = deployment.spec.template.spec.volumes.find((v: Manifest) => v.name === "config");
  assert.equal(volume.configMap.name, configMap.metadata.name);
  assert.match(configMap.metadata.name, /^breakwater-config-[a-z0-9]+$/);
});

function composeFile(): { services: Record<string, Manifest> } {
  return parse(Deno.readTextFileSync(`${COMPOSE}/compose.yaml`), { merge: true });
}

Deno.test("compose: three gateways on one config, mounted where the image reads it, drained in time", () => {
  const compose = composeFile();
  const config = parseConfig(JSON.parse(Deno.readTextFileSync(`${COMPOSE}/breakwater.json`)));
  const gateways = Object.entries(compose.services).filter(([name]) => name.startsWith("gateway-"));
  assert.equal(gateways.length, 3);
  const hostPorts = new Set<string>();
  for (const [name, gateway] of gateways) {
    assert.equal(gateway.image, "breakwater:0.1.0", name);
    assert.equal(gateway.build.context, "../..", name);
    assert.ok(Deno.statSync(`${COMPOSE}/${gateway.build.context}/Dockerfile`).isFile);
    assert.deepEqual(
      gateway.volumes,
      [`./breakwater.json:${IMAGE_CONFIG_PATH}:ro`, "./tls:/app/data/tls:ro"],
      name,
    );
    assert.ok(
      durationMs(gateway.stop_grace_period) > drainMs(config),
      `${name}: stop_grace_period ${gateway.stop_grace_period} <= drain ${drainMs(config)} ms`,
    );
    assert.match(gateway.environment.DENO_KV_ACCESS_TOKEN, /^\$\{DENO_KV_ACCESS_TOKEN:\?/);
    const containerPorts = (gateway.ports as string[]).map((mapping) => {
      const parts = mapping.split(":");
      hostPorts.add(parts.slice(0, -1).join(":"));
      return Number(parts.at(-1));
    });
    assert.deepEqual(containerPorts, [config.listen.port, config.admin.port], name);
  }
  assert.equal(hostPorts.size, 6, "every published host port is distinct");
  // The admin port is published, so it must listen beyond the container's loopback.
  assert.equal(config.admin.hostname, "0.0.0.0");
});

Deno.test("compose: kv.path is the denokv service with the same token; upstreams are the demo services", () => {
  const compose = composeFile();
  const config = parseConfig(JSON.parse(Deno.readTextFileSync(`${COMPOSE}/breakwater.json`)));
  const kvUrl = new URL(config.kv.path!);
  const denokv = compose.services[kvUrl.hostname];
  assert.ok(denokv, `no service ${kvUrl.hostname}`);
  assert.match(denokv.image, /^ghcr\.io\/denoland\/denokv:/);
  assert.equal(Number(kvUrl.port), 4512);
  assert.ok(
    !denokv.command.some((arg: string) => arg.startsWith("--addr")),
    "default --addr :4512",
  );
  assert.ok(denokv.command.includes("serve"));
  assert.equal(
    denokv.environment.DENO_KV_ACCESS_TOKEN,
    compose.services["gateway-1"].environment.DENO_KV_ACCESS_TOKEN,
  );

  for (const service of Object.values(config.services)) {
    for (const upstream of service.upstreams) {
      const url = new URL(upstream);
      const container = compose.services[url.hostname];
      assert.ok(container, `no compose service for upstream ${upstream}`);
      const [run, allowNet, script, name, port, hostname] = container.command;
      assert.deepEqual([run, allowNet], ["run", "--allow-net"]);
      assert.equal(name, service.name);
      assert.equal(port, url.port);
      assert.equal(hostname, "0.0.0.0");
      const [hostDir, containerDir] = container.volumes[0].split(":");
      assert.ok(script.startsWith(`${containerDir}/`));
      assert.ok(
        Deno.statSync(`${COMPOSE}/${hostDir}/${script.slice(containerDir.length + 1)}`).isFile,
      );
    }
  }
});

/** `listen.tls` pointing into `folder`, as the examples' comments say to set it. */
function withTls(config: GatewayConfig, folder: string, cert: string, key: string): string[] {
  return permissionsFor(IMAGE_CONFIG_PATH, config.kv.path, last(image, "WORKDIR"), [
    `${folder}/${cert}`,
    `${folder}/${key}`,
  ]).read;
}

/** Whether the image's CMD --allow-read covers `path` (a granted folder covers its files). */
function imageMayRead(path: string): boolean {
  const cmd: string[] = JSON.parse(last(image, "CMD"));
  const granted = cmd.find((word) => word.startsWith("--allow-read="))!.slice(13).split(",");
  return granted.some((folder) => path === folder || path.startsWith(`${folder}/`));
}

Deno.test("kubernetes and compose: a certificate folder is mounted where the image may read it", () => {
  const manifests = k8sManifests();
  const pod = find(manifests, "Deployment", "breakwater").spec.template.spec;
  const [container] = pod.containers;
  const mount = container.volumeMounts.find((m: Manifest) => m.name === "tls");
  assert.equal(mount.readOnly, true);
  // A directory mount: a subPath mount never sees a renewed Secret.
  assert.equal(mount.subPath, undefined);
  const volume = pod.volumes.find((v: Manifest) => v.name === "tls");
  // Optional: without the Secret the example still starts (plain HTTP).
  assert.deepEqual(volume.secret, { secretName: "breakwater-tls", optional: true });
  // kubernetes.io/tls Secrets hold tls.crt and tls.key.
  const k8sFiles = withTls(kubernetesConfig(), mount.mountPath, "tls.crt", "tls.key");
  for (const file of ["tls.crt", "tls.key"]) {
    assert.ok(k8sFiles.includes(`${mount.mountPath}/${file}`));
    assert.ok(imageMayRead(`${mount.mountPath}/${file}`), `${mount.mountPath}/${file}`);
  }
  assert.ok(container.ports.some((p: Manifest) => p.name === "https"));

  const compose = composeFile();
  const tlsVolume = (compose.services["gateway-1"].volumes as string[]).find((v) =>
    v.startsWith("./tls:")
  );
  assert.ok(tlsVolume, "compose mounts ./tls");
  const [, containerDir, mode] = tlsVolume.split(":");
  assert.equal(mode, "ro");
  assert.ok(imageMayRead(`${containerDir}/cert.pem`) && imageMayRead(`${containerDir}/key.pem`));
  // The config line the compose file's comment gives parses.
  const text = Deno.readTextFileSync(`${COMPOSE}/compose.yaml`);
  const line = /"tls": (\{.*\})/.exec(text);
  assert.ok(line, "the comment shows the listen.tls to set");
  const tls = JSON.parse(line[1]);
  const composeConfig = JSON.parse(Deno.readTextFileSync(`${COMPOSE}/breakwater.json`));
  const parsed = parseConfig({ ...composeConfig, listen: { ...composeConfig.listen, tls } });
  assert.equal(parsed.listen.tls?.certFile, `${containerDir}/cert.pem`);
  assert.ok(imageMayRead(parsed.listen.tls!.keyFile));
});
