#!/usr/bin/env bash
# Makes `debian:trixie-slim` available to a Docker engine that cannot pull from a
# registry: debootstraps a Debian 13 minbase rootfs and `docker import`s it under that
# name. Where the image already exists (pulled or imported earlier) this is a no-op, so
# .ci/run can call it on every run. The Dockerfiles do not know the difference.
#
# The Debian mirror is read from this machine's own apt sources (or $DEBIAN_MIRROR),
# never hard-coded. Needs root and debootstrap (.ci/host-deps.sh installs it).
set -euo pipefail

image=${BASE_IMAGE:-debian:trixie-slim}
suite=${BASE_SUITE:-trixie}

if ! docker version >/dev/null 2>&1; then
  echo "base-image: no Docker engine answers (docker version failed)" >&2
  exit 1
fi
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "base-image: $image already present, reusing it"
  exit 0
fi
# A real registry beats a home-made rootfs: try a pull first, quietly.
if timeout 60 docker pull -q "$image" >/dev/null 2>&1; then
  echo "base-image: pulled $image"
  exit 0
fi

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
fi
if [[ -z $mirror ]]; then
  mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
fi
if [[ -z $mirror ]]; then
  echo "base-image: no Debian mirror found in /etc/apt sources; set DEBIAN_MIRROR" >&2
  exit 1
fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed" >&2; exit 1; }

work=$(mktemp -d /var/tmp/base-image.XXXXXX)
trap 'umount -R "$work/rootfs/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "base-image: debootstrapping $suite (minbase) into $rootfs ..."
keyring_args=()
if [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
  keyring_args=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
fi
debootstrap --variant=minbase "${keyring_args[@]}" "$suite" "$rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# Make it look like the official slim image: same apt sources layout, no docs or
# man pages installed by later apt runs, apt caches cleaned after each install.
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: $suite ${suite}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
echo 'APT::Install-Recommends "false";' >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log

# Trust what this machine trusts: a site's TLS-inspecting proxy CA in
# /usr/local/share/ca-certificates would otherwise make cargo's crates.io download fail
# inside the builder stage. `apt-get install ca-certificates` there picks these up.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$rootfs/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  echo "base-image: added the host's local CA certificates"
fi

echo "base-image: importing as $image"
tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$image" >/dev/null
docker image inspect "$image" --format 'base-image: {{.RepoTags}} {{.Size}} bytes'
