# One image for every process of the hub: `gateway` (default) and `workers <subcommand>`.
# Build:  docker build -t customer-data-hub .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && install -m 0755 target/release/gateway target/release/workers /usr/local/bin/

# GraphiQL's bundle, from the npm registry by the lockfile (the gateway serves it offline).
FROM node:20-bookworm-slim AS graphiql
WORKDIR /web/graphiql
COPY web/graphiql/package.json web/graphiql/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/graphiql/src ./src
RUN npm run build

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 hub
COPY --from=build /usr/local/bin/gateway /usr/local/bin/workers /usr/local/bin/
COPY --from=graphiql /web/graphiql/dist /usr/share/hub/graphiql
USER hub
ENV GATEWAY_ADDR=0.0.0.0:4000 \
    GRAPHIQL_ASSETS_DIR=/usr/share/hub/graphiql \
    LOG_FORMAT=json
EXPOSE 4000
CMD ["gateway"]
