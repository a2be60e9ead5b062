# syntax=docker/dockerfile:1
# Multi-stage: compile in a full image, run as the unprivileged "node" user
# with production dependencies only.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY gen ./gen
COPY src ./src
# The dashboard's browser code (npm run build bundles it into dist/dashboard).
COPY web ./web
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
# jemalloc instead of glibc's malloc: finished HTTP/2 streams' native memory
# is freed in bursts by full GCs, and glibc kept those holes (malloc_trim gave
# back ~58 MiB at 10k agents); jemalloc returns freed pages within ~1 s.
# MALLOC_CONF: package.json's config.malloc_conf (why: README, "Node flags").
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/lib/"$(uname -m)"-linux-gnu/libjemalloc.so.2 /usr/local/lib/libjemalloc.so.2
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=9405 \
    DATA_DIR=/data \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0
WORKDIR /app
# Signing keys and the generated bootstrap token live here (mode 0600).
RUN mkdir -p /data && chown node:node /data && chmod 700 /data
VOLUME /data
COPY --from=build --chown=node:node /app/package.json ./
COPY --from=build --chown=node:node /app/node_modules ./node_modules
COPY --from=build --chown=node:node /app/dist ./dist
# The contracts travel with the image, for clients that build stubs from it.
COPY --chown=node:node proto ./proto
USER node
EXPOSE 9405
# SERVING only when every component is healthy and the process is not draining.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT}/health`).then(r=>r.json()).then(j=>process.exit(j.status==='SERVING_STATUS_SERVING'?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
# --max-semi-space-size=16 --heap-growing-percent=100 --no-allocation-site-pretenuring: package.json's config.node_flags (why: README, "Configuration", Node flags).
CMD ["node", "--max-semi-space-size=16", "--heap-growing-percent=100", "--no-allocation-site-pretenuring", "dist/src/main.js"]
