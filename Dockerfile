# The edgeplane image, built from source (needs registry access for the
# Rust and Debian images). Without a registry, build the same image with
# `cargo build --release && deploy/offline-image.sh`.
#
#   docker build -t edgeplane:local .      (docker-compose build does this)

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The protobuf code is generated without protoc; nothing else is needed.
RUN cargo build --release --locked --bin edgeplane \
 && install -m 0755 target/release/edgeplane /usr/local/bin/edgeplane

FROM debian:bookworm-slim
COPY --from=build /usr/local/bin/edgeplane /usr/local/bin/edgeplane
RUN mkdir -p /var/lib/edgeplane /etc/edgeplane
ENV EDGEPLANE_STATE_DIR=/var/lib/edgeplane
EXPOSE 8080
# The same binary is the coordinator, the worker and the sample service:
# docker-compose.yml picks with `command`.
CMD ["edgeplane", "coordinator"]
