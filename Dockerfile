# Multi-stage build; runs as the non-root `node` user on Node 24.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# The browser page: Vite is a devDependency, so it is built here and only web/dist is kept.
FROM node:24-bookworm-slim AS web
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts ./scripts
COPY web ./web
COPY client ./client
COPY src ./src
RUN node scripts/build-web.mjs --force

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json mikro-orm.config.ts ./
COPY src ./src
COPY client ./client
COPY --from=web /app/web/dist ./web/dist
USER node
EXPOSE 3000
STOPSIGNAL SIGTERM
CMD ["node", "--import", "tsx", "src/main.ts"]
