# syntax=docker/dockerfile:1
# pageviews' container image: the pipeline (`pageviews`) and the SQL client it execs
# (`pageviews-sql`) on Debian slim, running as an unprivileged user.
#
#   docker build -t pageviews:latest .          (make docker-images)
#   docker run --rm -p 9249:9249 -v "$PWD/data:/data" pageviews:latest run --count 10000
#
# Stages: `chef` (Rust, cargo-chef, the C toolchain for librdkafka) → `planner` (the recipe:
# manifests and lock file only) → `builder` (dependencies from the recipe, cached until
# Cargo.lock or a Cargo.toml changes; then the sources) → `runtime`. Both binaries are built by
# scripts/build, the one place that says how.

# The sql crate needs Rust 1.94 or later. Builder and runtime share the Debian release, so the
# binaries link against the glibc they run with.
ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
# rdkafka builds its bundled librdkafka with its own configure script: a C/C++ compiler,
# make, pkg-config, zlib's and OpenSSL's headers (TLS to brokers) and python3 (scripts/setup
# installs the same on a laptop).
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config zlib1g-dev libssl-dev g++ make python3 \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
COPY scripts/build scripts/build
# Dependencies only, with the very flags and packages of the real build (scripts/build prints
# them), so that the layer below reuses every compiled dependency.
RUN cargo chef cook --recipe-path recipe.json $(scripts/build --cargo-args)
COPY . .
# The release profile keeps line tables (debug = 1, for profiling); the image drops them and
# keeps the symbols, so backtraces still name functions: pageviews 77 MB → 16 MB.
RUN scripts/build \
 && mkdir /out \
 && cp "$(scripts/build --bin-dir)/pageviews" "$(scripts/build --bin-dir)/pageviews-sql" /out/ \
 && strip --strip-debug /out/pageviews /out/pageviews-sql

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to S3 and to Kafka brokers with security.protocol=SSL.
# libssl3: the OpenSSL librdkafka links against for that TLS (dynamically, from libssl-dev).
# curl: the container's health check (`curl -fsS http://127.0.0.1:9249/healthz`); distroless
# has no shell or HTTP client to run one with, and pageviews has no health subcommand.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid, so a host folder mounted at /data can be given to it: chown 10001 data/.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin pageviews \
 && mkdir /data \
 && chown pageviews:pageviews /data
COPY --from=builder /out/ /usr/local/bin/
USER pageviews
WORKDIR /data
# The image's defaults for flags that have an env var: tables in the /data volume, and the
# HTTP endpoints on every interface, where a published port reaches them (127.0.0.1, the
# binary's default, is unreachable from outside the container).
ENV PAGEVIEWS_OUTPUT=/data \
    PAGEVIEWS_HTTP=0.0.0.0:9249
VOLUME ["/data"]
EXPOSE 9249
# No HEALTHCHECK here: the same image runs `datagen`, which serves no HTTP; compose.yaml gives
# each service the check that fits it.
ENTRYPOINT ["pageviews"]
CMD ["run"]
