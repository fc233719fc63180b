# Multi-stage build; runs as the non-root `node` user on Node 24.
FROM node:24-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:24-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json tsconfig.json mikro-orm.config.ts ./
COPY src ./src
COPY client ./client
USER node
EXPOSE 3000
STOPSIGNAL SIGTERM
CMD ["node", "--import", "tsx", "src/main.ts"]
