#!/usr/bin/env bash
# Build the local stand-in for `python:3.11-slim` when no container registry is reachable:
# debootstrap a minimal Debian bookworm with python3 + venv, then `docker import` it.
#
#   docker/make-base-image.sh [TAG]        (default TAG: zoo-base:bookworm-py3.11)
#
# Idempotent: does nothing when the image already exists (set ZOO_REBUILD_BASE=1 to rebuild).
# The Debian mirror is taken from ZOO_DEBIAN_MIRROR, else from the host's apt sources, else deb.debian.org.
# Needs root, debootstrap and a running Docker engine. Real users never need this: the Dockerfiles default
# to the real base image named in each bundle's manifest (pinned_env.base_image).
set -euo pipefail

tag=${1:-zoo-base:bookworm-py3.11}
docker=${DOCKER:-/usr/bin/docker}
suite=bookworm

if [ -z "${ZOO_REBUILD_BASE:-}" ] && "$docker" image inspect "$tag" >/dev/null 2>&1; then
  echo "make-base-image: $tag already exists ($("$docker" image inspect -f '{{.Id}}' "$tag")), nothing to do"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "make-base-image: debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "make-base-image: debootstrap needs root" >&2; exit 2; }

mirror=${ZOO_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
    /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

work=$(mktemp -d /var/tmp/zoo-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "make-base-image: debootstrap $suite (minbase + python3 python3-venv ca-certificates) from $mirror"
start=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; echo "make-base-image: debootstrap failed" >&2; exit 1; }

# Slim it the way the official slim images are: no apt lists, caches, docs or man pages.
rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/*.bin "$work"/rootfs/var/cache/apt/archives/*.deb \
  "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/* "$work"/rootfs/usr/share/locale/* \
  "$work"/rootfs/var/log/*.log "$work"/rootfs/tmp/*
id=$(tar --numeric-owner -C "$work/rootfs" -c . | "$docker" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap $suite minbase + python3 python3-venv ca-certificates from $mirror" \
  - "$tag")
echo "make-base-image: imported $tag as $id in $((SECONDS - start)) s (local image: no registry digest)"
