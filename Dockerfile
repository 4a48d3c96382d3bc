# Builds the receipts services. protoc comes from a crate and librdkafka is compiled from source,
# so the builder needs only a C toolchain.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p receipts-projector

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/receipts receipts \
    && mkdir -p /var/lib/receipts && chown receipts /var/lib/receipts
COPY --from=build /src/target/release/receipts-projector /usr/local/bin/
USER receipts
WORKDIR /var/lib/receipts
