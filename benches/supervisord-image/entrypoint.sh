#!/bin/sh
# Entrypoint of the supervisord comparison image: on an empty volume, initdb and
# provision (role, database, vector) on a socket-only temporary server, as the official
# postgres image's entrypoint does; then supervisord becomes PID 1.
set -eu
bindir=/usr/lib/postgresql/17/bin
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); fi
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  install -d -o postgres -g postgres -m 0700 "$PGDATA"
  runuser -u postgres -- "$bindir/initdb" -D "$PGDATA" -U postgres --auth-local=peer \
    --auth-host=scram-sha-256 >/dev/null
  runuser -u postgres -- "$bindir/pg_ctl" -D "$PGDATA" -w -s \
    -o "-c config_file=/etc/postgresql/postgresql.conf -c listen_addresses=''" start
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -v user="$POSTGRES_USER" \
    -v pw="$POSTGRES_PASSWORD" -v db="$POSTGRES_DB" postgres <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'pw';
CREATE DATABASE :"db" OWNER :"user";
\c :"db"
CREATE EXTENSION vector;
SQL
  runuser -u postgres -- "$bindir/pg_ctl" -D "$PGDATA" -w -s -m fast stop
fi
export POSTGRES_PASSWORD
exec supervisord -n -c /etc/supervisor/supervisord.conf
