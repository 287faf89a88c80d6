# One image for every process of the hub: `gateway` (default) and `workers <subcommand>`.
# Build:  docker build -t customer-data-hub .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && install -m 0755 target/release/gateway target/release/workers /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 hub
COPY --from=build /usr/local/bin/gateway /usr/local/bin/workers /usr/local/bin/
USER hub
ENV GATEWAY_ADDR=0.0.0.0:4000 \
    LOG_FORMAT=json
EXPOSE 4000
CMD ["gateway"]
