# The Sluice image: one image for the controller and the agent (`sluice controller`, `sluice agent`).
# Build: docker build -t sluice:0.1.0 .   Run: docker run sluice:0.1.0 agent --help
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (deploy/kubernetes, docs/kubernetes.md).

# better-sqlite3 compiles from source when npm finds no prebuilt binary for this platform.
FROM node:20-bookworm-slim AS toolchain
WORKDIR /src
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*

# The compiled JavaScript, from the full (dev) install.
FROM toolchain AS build
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npx tsc -p tsconfig.build.json

# The runtime dependencies only.
FROM toolchain AS deps
COPY package.json package-lock.json ./
RUN npm ci --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY package.json ./
COPY bin ./bin
# A user of its own, not root; the same uid the Kubernetes manifests ask for.
RUN groupadd --gid 10001 sluice && useradd --uid 10001 --gid sluice --no-create-home --shell /usr/sbin/nologin sluice
USER 10001:10001
ENTRYPOINT ["node", "bin/sluice.js"]
