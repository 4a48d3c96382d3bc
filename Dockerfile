# Builds every receipts binary. protoc comes from a crate and librdkafka is compiled from source,
# so the builder needs only a C toolchain.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release \
      -p receipts-ingest -p receipts-projector -p receipts-query -p receipts-dispatcher -p receipts
# The event contracts ship with the release: the descriptor set is the one compiled into the
# binaries (and frozen in proto/releases/ when the release is cut).
RUN mkdir -p /src/contracts \
    && target/release/receipts contracts descriptor-set --out /src/contracts/receipts-v1.binpb \
    && cp docs/asyncapi.yaml /src/contracts/asyncapi.yaml

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/receipts receipts \
    && mkdir -p /var/lib/receipts && chown receipts /var/lib/receipts
COPY --from=build /src/target/release/receipts-ingest /src/target/release/receipts-projector \
     /src/target/release/receipts-query /src/target/release/receipts-dispatcher \
     /src/target/release/receipts /usr/local/bin/
COPY --from=build /src/contracts/ /usr/share/receipts/
COPY deploy/receipts.toml /etc/receipts/receipts.toml
ENV RECEIPTS_CONFIG=/etc/receipts/receipts.toml
USER receipts
WORKDIR /var/lib/receipts
