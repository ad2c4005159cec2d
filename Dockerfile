# auditproc's image: a static auditproc binary, the example plugins and the
# default pipeline, run as a non-root user. Nothing is compiled here and, with
# the default BASE, nothing is pulled: scripts/image.sh (`make image`) builds
# the binary (CGO_ENABLED=0) and the plugins on the host, stages them under
# build/image/, then builds this file. So a plain `docker build` works only
# after `scripts/image.sh --stage`.
#
# Layout (docs/deployment.md):
#   /usr/local/bin/auditproc             the command (entry point)
#   /etc/auditproc/plugins.yaml          the default pipeline (AUDITPROC_CONFIG);
#                                        mount your own directory here, read-only
#   /usr/lib/auditproc/plugins/*.wasm    the example plugins it names
#   /var/cache/auditproc                 compiled-plugin cache (writable)
#
# BASE: scratch by default. With a registry, any image works (a distroless
# static image, or Debian for a shell to debug with):
#   docker build --build-arg BASE=gcr.io/distroless/static-debian12 .
ARG BASE=scratch
FROM ${BASE}

ARG VERSION=devel
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="auditproc" \
      org.opencontainers.image.description="Verifies HMAC-signed audit events from a Redis stream and runs them through sandboxed WebAssembly plugins" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/auditproc/auditproc" \
      org.opencontainers.image.documentation="https://github.com/auditproc/auditproc/blob/main/docs/deployment.md"

COPY build/image/rootfs/ /
COPY --chown=65532:65532 build/image/cache/ /var/cache/auditproc/

# The compiled-plugin cache makes a restarted replica ready at once. The
# metrics listener of the image's own plugins.yaml accepts connections from
# outside the container (metrics.address 0.0.0.0:9464, for Prometheus); it is
# set in that file, not in the environment, so a mounted plugins.yaml keeps
# its own metrics.address (the environment would win over the file).
ENV AUDITPROC_CONFIG=/etc/auditproc/plugins.yaml \
    AUDITPROC_HOST_CACHE_DIR=/var/cache/auditproc \
    AUDITPROC_CONSUMER_STATE_DIR=/var/cache/auditproc/state

USER 65532:65532
WORKDIR /etc/auditproc
EXPOSE 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/auditproc", "health", "--quiet"]
ENTRYPOINT ["/usr/local/bin/auditproc"]
CMD ["run"]
