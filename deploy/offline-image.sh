#!/usr/bin/env bash
# Builds the edgeplane image with no registry at hand: a root filesystem of
# the release binary, the shared libraries it links (as `ldd` lists them)
# and a few /etc files, imported with `docker import`. The result runs the
# coordinator, the worker and the sample service alike.
#
#   cargo build --release && deploy/offline-image.sh      # -> edgeplane:local
#   deploy/offline-image.sh BINARY TAG
#   deploy/offline-image.sh --etcd [BINARY] [TAG]         # -> edgeplane-etcd:local,
#                                                         #    Debian's etcd (etcd-server)
#
# With registry access, `docker-compose build` (the Dockerfile) makes the
# same tag from source instead; the HA stack can use any etcd 3.4+ image.
set -euo pipefail
kind=edgeplane
if [ "${1:-}" = --etcd ]; then
  kind=etcd
  shift
fi
if [ "$kind" = etcd ]; then
  bin=${1:-$(command -v etcd || echo /usr/bin/etcd)}
  tag=${2:-${EDGEPLANE_ETCD_IMAGE:-edgeplane-etcd:local}}
else
  bin=${1:-target/release/edgeplane}
  tag=${2:-${EDGEPLANE_IMAGE:-edgeplane:local}}
fi
[ -x "$bin" ] || { echo "offline-image: no binary at $bin (cargo build --release, or apt-get install etcd-server)" >&2; exit 1; }
command -v docker >/dev/null || { echo "offline-image: docker is not installed" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/usr/local/bin "$root"/etc/edgeplane "$root"/var/lib/edgeplane "$root"/tmp
chmod 1777 "$root/tmp"
install -m 0755 "$bin" "$root/usr/local/bin/$kind"
mkdir -p "$root/var/lib/etcd"

# The dynamic loader and every library the binary links, at the same paths.
libs=$(ldd "$bin" | grep -o '/[^ )]*' | sort -u)
[ -n "$libs" ] || { echo "offline-image: ldd lists no libraries for $bin" >&2; exit 1; }
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done

printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
mkdir -p "$root/root"

previous=$(docker images -q "$tag" 2>/dev/null || true)
if [ "$kind" = etcd ]; then
  set -- -c 'CMD ["etcd"]' -c 'EXPOSE 2379' -m "etcd $("$bin" --version 2>/dev/null | awk 'NR==1{print $3}') (offline image)"
else
  set -- -c 'ENV EDGEPLANE_STATE_DIR=/var/lib/edgeplane' -c 'EXPOSE 8080' -c 'CMD ["edgeplane", "coordinator"]' \
    -m "edgeplane $("$bin" --version 2>/dev/null | awk '{print $2}') (offline image)"
fi
tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . |
  docker import -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$@" - "$tag" >/dev/null
# The image this tag named before, now untagged: removed unless a container uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker images -q "$tag")" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
echo "offline-image: built $tag from $bin"
