# syntax=docker/dockerfile:1
# The chaoseater image: one binary (serve, agent, demo-target, the CLI) on a slim Debian.
#
#   docker build -t chaoseater:local .        # docker compose up --build does this too
#
# Stage 1 compiles the dependencies alone, from the manifests and the lock file, so a change to our
# sources rebuilds only our crates. Stage 2 is the runtime: the binary, the examples, a non-root user.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# librdkafka (built by rdkafka-sys) needs a C toolchain, make, perl, OpenSSL and zlib headers: the
# rust image (buildpack-deps) has them; listed so a change of base image fails here, not in the build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl libssl-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src

# Dependency layer: the real manifests with empty sources. Every target path a manifest names
# (the binary, the benches) gets a stub, or cargo refuses the manifest.
COPY Cargo.toml Cargo.lock ./
COPY schemas/Cargo.toml schemas/
COPY net/Cargo.toml net/
COPY producers/Cargo.toml producers/
COPY processors/Cargo.toml processors/
COPY sinks/Cargo.toml sinks/
RUN for crate in schemas net producers processors sinks; do mkdir -p $crate/src && : > $crate/src/lib.rs; done \
 && grep -ho 'path = "[^"]*\.rs"' Cargo.toml | cut -d'"' -f2 \
    | while read -r f; do mkdir -p "$(dirname "$f")" && echo 'fn main() {}' > "$f"; done \
 && cargo build --release --locked --bin chaoseater \
 && rm -rf schemas net producers processors sinks src benches

# Our crates: touch the sources so cargo sees them newer than the stubs' fingerprints.
COPY . .
RUN find schemas net producers processors sinks src -name '*.rs' -exec touch {} + \
 && cargo build --release --locked --bin chaoseater \
 && install -m 0755 target/release/chaoseater /usr/local/bin/chaoseater

FROM debian:bookworm-slim AS runtime
# libssl3 and zlib for librdkafka; curl for the compose healthchecks; ca-certificates for TLS brokers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 chaoseater \
 && useradd --system --uid 10001 --gid chaoseater --home-dir /var/lib/chaoseater --shell /usr/sbin/nologin chaoseater \
 && install -d -o chaoseater -g chaoseater -m 0750 /var/lib/chaoseater
COPY --from=build /usr/local/bin/chaoseater /usr/local/bin/chaoseater
COPY examples /usr/share/chaoseater/examples
USER chaoseater:chaoseater
WORKDIR /var/lib/chaoseater
ENV CHAOSEATER_LOG=info
# 9464: serve's /metrics and /health; 8700/8701: an agent's control API and proxy; 8501: demo-target.
EXPOSE 9464 8700 8701 8501
ENTRYPOINT ["chaoseater"]
CMD ["--help"]
