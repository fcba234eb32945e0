# One image with the four binaries (publisher, pipeline, subscriber, debug-subscriber):
# they share one build, one base and one release, and the Kubernetes manifest picks the
# binary with `command:`. Four images would quadruple the build and the scanning for a
# few MB of difference each.
#
#   podman build -t pubsub-envelope .        # the release: compiles the locked workspace
#   docker build -t pubsub-envelope .        # the same
#
# The bases are ARGs, so that a mirror (or, in the tests, a base made locally: no
# registry is reachable there) can stand in. BINARIES=prebuilt packages binaries
# already built into target/image-bin/ instead of compiling again (deploy/tests).
ARG BUILD_BASE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=build

FROM ${BUILD_BASE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY bins bins
COPY bindings bindings
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/publisher target/release/pipeline target/release/subscriber target/release/debug-subscriber /out/

FROM scratch AS prebuilt
COPY target/image-bin/ /out/

# hadolint ignore=DL3006
FROM ${BINARIES} AS binaries

# distroless cc: glibc, libgcc, CA certificates, no shell, user nonroot (65532).
# hadolint ignore=DL3006
FROM ${RUNTIME_BASE}
LABEL org.opencontainers.image.title="pubsub-envelope" \
      org.opencontainers.image.description="Envelope-encrypted and signed messages on a shared Pub/Sub topic: publisher, pipeline, subscriber, debug-subscriber" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binaries /out/ /usr/local/bin/
USER 65532:65532
# The metrics, /healthz and /readyz of `--metrics_addr 0.0.0.0:9464`.
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/pipeline"]
