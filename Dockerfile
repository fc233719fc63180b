# Multi-stage build; runs as the non-root `node` user on Node 24.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# The browser page and the compiled server: Vite and TypeScript are devDependencies, so both are
# built here and only web/dist and dist/ are kept.
FROM node:24-bookworm-slim AS web
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY web ./web
COPY client ./client
COPY src ./src
RUN node scripts/build-web.mjs --force && npx tsc -p tsconfig.build.json

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json mikro-orm.config.ts ./
COPY src ./src
COPY client ./client
COPY --from=web /app/web/dist ./web/dist
COPY --from=web /app/dist ./dist
USER node
EXPOSE 3000
STOPSIGNAL SIGTERM
# Compiled JavaScript, not tsx: tsx keeps function names with a helper that gives every named
# closure a dictionary property store (about 3 KB more per idle WebSocket connection).
# The node flags are `npm start`'s (kept equal by test/deploy.node-flags.test.ts): a young
# generation of 2 x 16 MB, not V8's 2 x 64 MB, which a connect burst grows and an idle node never
# gives back, and the old generation compacted once it has grown by half, so that a burst's garbage
# does not stay in an idle node's heap (docs/OPERATIONS.md, "Memory").
CMD ["node", "--max-semi-space-size=16", "--heap-growing-percent=50", "dist/src/main.js"]
