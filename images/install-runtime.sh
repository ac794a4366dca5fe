#!/bin/sh
# Runtime-stage steps shared by Dockerfile.agent and Dockerfile.genie: PostgreSQL 17 with
# pgvector and the reference API's Python packages, all from Debian, plus the accounts
# and directories hivesup's config expects.
set -eu
export DEBIAN_FRONTEND=noninteractive

# Fixed ids (as the official postgres image uses 999) so volume ownership survives
# image rebuilds. Created before the packages, which then reuse them.
groupadd --system --gid 999 postgres
useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres
groupadd --system --gid 10001 api
useradd --system --uid 10001 --gid api --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin api

apt-get update
# postgresql-common would create and start a "main" cluster on install; hivesup's
# `postgres init` makes the one cluster this image has, in the volume.
apt-get install -y --no-install-recommends postgresql-common
sed -ri 's/^#?\s*create_main_cluster\s*=.*/create_main_cluster = false/' /etc/postgresql-common/createcluster.conf
apt-get install -y --no-install-recommends \
  postgresql-17 postgresql-17-pgvector \
  python3-fastapi python3-uvicorn python3-psycopg
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/apt/* /var/log/dpkg.log

install -d -o postgres -g postgres -m 2775 /var/run/postgresql
install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
install -d -m 0755 /etc/postgresql/conf.d /docker-entrypoint-initdb.d /etc/hivesup
