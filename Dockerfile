# Breakwater on Deno's official image (denoland/deno, Debian based; tini is its entrypoint,
# DENO_DIR=/deno-dir, and it ships a non-root `deno` user).
FROM denoland/deno:2.9.6

WORKDIR /app

# Dependencies first, so this layer is rebuilt only when deno.json or deno.lock change.
COPY deno.json deno.lock ./
RUN deno install --frozen

# The application, then a type-checked cache of the entry point so start-up compiles nothing.
COPY src ./src
COPY breakwater.json ./breakwater.json
RUN deno cache --frozen src/main.ts

# KV file and anything else the gateway writes lives in /app/data (mount a volume there, or
# point kv.path at a KV Connect URL to share breakers across hosts).
RUN mkdir -p /app/data && chown -R deno:deno /app/data
VOLUME ["/app/data"]

USER deno

ENV BREAKWATER_CONFIG=/app/breakwater.json \
    BREAKWATER_LOG_LEVEL=info \
    PORT=8080
EXPOSE 8080 9090

# Deno's image has no curl; a one-line fetch does the same.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["deno", "eval", "const r = await fetch('http://127.0.0.1:' + (Deno.env.get('PORT') ?? '8080') + '/healthz'); Deno.exit(r.ok ? 0 : 1)"]

# Explicit permissions, never -A: network, the config and KV paths, cgroup limits, env.
CMD ["run", "--frozen", "--cached-only", \
     "--allow-net", "--allow-env", "--allow-sys", \
     "--allow-read=/app/breakwater.json,/app/data,/sys/fs/cgroup,/proc/self", \
     "--allow-write=/app/data", \
     "src/main.ts"]
