# Breakwater on Deno's official image (denoland/deno: Debian, tini as PID 1 through
# docker-entrypoint.sh, which prefixes `deno` to a CMD that starts with a Deno subcommand;
# DENO_DIR=/deno-dir; a non-root `deno` user, uid 1993).
#
#   docker build -t breakwater:0.1.0 .
#   docker run --rm -p 8080:8080 -v "$PWD/gw.json:/app/breakwater.json:ro" breakwater:0.1.0
#   docker stop -t 35 <container>
#
# STOP TIMEOUT: `docker stop` sends SIGTERM and kills after 10 s by default, but the gateway
# drains for up to shutdown.drainDelayMs + shutdown.timeoutMs (0 + 25 s by default). Give it
# more than that: `docker stop -t 35`, `docker run --stop-timeout 35`, compose
# `stop_grace_period: 35s`, Kubernetes `terminationGracePeriodSeconds` (plus any preStop sleep).

# --- Stage 1: check every pinned package against deno.lock, type-check the gateway, and prune
# deno.json and deno.lock to the packages it loads (`deno install --entrypoint` alone would
# still install every package in the import map and the lock file, test-only ones included).
FROM denoland/deno:2.9.6 AS deps
WORKDIR /build
COPY deno.json deno.lock ./
COPY src ./src
COPY deploy/docker/prune_deps.ts ./deploy/docker/prune_deps.ts
RUN deno install --frozen \
 && deno check --frozen src/main.ts \
 && deno info --frozen --json src/main.ts > graph.json \
 && deno run --allow-read=. --allow-write=. deploy/docker/prune_deps.ts graph.json

# --- Stage 2: the image. Only the gateway's packages, from the pruned lock file (same
# integrity hashes), installed before the sources so the layer is reused until they change.
FROM denoland/deno:2.9.6

LABEL org.opencontainers.image.title="Breakwater" \
      org.opencontainers.image.description="Resilient edge gateway with a fleet-shared circuit breaker" \
      org.opencontainers.image.licenses="MIT"

WORKDIR /app
COPY --from=deps /build/deno.json /build/deno.lock ./
RUN deno install --frozen
COPY src ./src
# Caches the entry point's module graph (nothing left to download), so start-up fetches nothing.
RUN deno install --frozen --entrypoint src/main.ts src/workers/worker_main.ts
COPY breakwater.json ./breakwater.json

# The KV file lives in /app/data (mount a volume there, or point kv.path at a KV Connect URL to
# share breakers across hosts). The code and packages stay root-owned: the gateway cannot
# change them.
RUN mkdir -p /app/data && chown deno:deno /app/data
VOLUME ["/app/data"]

USER deno

# Mount your config over /app/breakwater.json: the permissions below allow reading that path.
ENV BREAKWATER_CONFIG=/app/breakwater.json \
    BREAKWATER_LOG_LEVEL=info \
    PORT=8080
# 8080: the public port. 9901: the admin port (dashboard, /metrics, admin API); it listens on
# 127.0.0.1 unless the config sets admin.hostname to 0.0.0.0, so publish it only on purpose.
EXPOSE 8080 9901

# Liveness without starting a second Deno: bash's /dev/tcp speaks HTTP/1.1 to /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${PORT:-8080} && printf 'GET /healthz HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: close\\r\\n\\r\\n' >&3 && IFS=$' \\r' read -r _ status _ <&3 && [ \"$status\" = 200 ]"]

# Explicit permissions, never -A: the ones `deno task start` derives for this config (the
# config file, the KV folder, the gateway's own code, cgroup limits, /proc/self). Run directly
# rather than through src/launch.ts: one process fewer, and the paths are fixed in this image.
# /app/src and /app/deno.json (read only, root-owned): "workers" is "auto" by default, one
# worker per whole core of the container's CPU quota, and workers load the gateway's code
# after start-up (README, "Workers"). Size the memory limit for them: about 60-70 MiB each.
# --v8-flags: src/runtime_flags.ts says why (CPU per request and p99 under load).
CMD ["run", "--frozen", "--cached-only", "--no-prompt", \
     "--v8-flags=--no-allocation-site-pretenuring", \
     "--allow-net", "--allow-env", "--allow-sys", \
     "--allow-read=/app/breakwater.json,/app/data,/app/src,/app/deno.json,/sys/fs/cgroup,/proc/self", \
     "--allow-write=/app/data", \
     "src/main.ts"]
