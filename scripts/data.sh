#!/usr/bin/env bash
# Data operations of the hive images (README, "Data"); `make agent-backup`,
# `make agent-restore` and the genie twins call this. Everything runs from the host
# through the Docker CLI, with the PostgreSQL 17 tools inside the image.
#
#   data.sh backup  --container C [--dir D] [--name N]
#       pg_dump -Fc of the container's database and pg_dumpall --roles-only, taken while
#       the API keeps running, written to D/N-TIMESTAMP.dump and .roles.sql.
#   data.sh backup  --from URL (--image I [--network NET] | --bindir DIR) [--dir D] [--name N]
#       the same from any PostgreSQL server (the old split setup's, an older major
#       version's): with the image's newer pg_dump in a throwaway container on NET, or
#       with the pg_dump in DIR on this host (the old server's own, see README "Data").
#       Give the password in PGPASSWORD, not in URL.
#   data.sh restore --container C --file F [--program api]
#       restores F into a new database while the API runs, stops the API through
#       hivesup, swaps the databases by RENAME, starts the API, waits for /health 200.
#       Whatever fails before the swap leaves the old database as it was.
#
# Exit codes: 0 done, 1 failed (the message says what is left where), 2 usage.
set -euo pipefail

prog=data.sh
die() { echo "$prog: $*" >&2; exit 1; }
usage() { echo "$prog: $*" >&2; echo "usage: $prog backup --container C | --from URL --image I; $prog restore --container C --file F (see the header of $0)" >&2; exit 2; }
say() { echo "$prog: $*"; }
value() { (($# >= 2)) || usage "$1 needs a value"; printf %s "$2"; }

now() { echo "${EPOCHREALTIME/,/.}"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
size() { numfmt --to=iec-i --suffix=B "$(stat -c %s "$1")"; }

# The superuser, application role and database of the container, from its environment
# (POSTGRES_* or POSTGRES_*_FILE, as the bootstrap reads them). In a hive image the
# superuser is `postgres` (hivesup is PID 1); in the official postgres image (postgres is
# PID 1) it is POSTGRES_USER.
container_env() {
  docker exec "$1" sh -c '
    get() {
      eval "v=\${$1:-}; f=\${$1_FILE:-}"
      if [ -n "$v" ]; then printf %s "$v"; elif [ -n "$f" ]; then cat "$f"; fi
    }
    user=$(get POSTGRES_USER); user=${user:-postgres}
    db=$(get POSTGRES_DB); db=${db:-$user}
    if [ "$(cat /proc/1/comm)" = hivesup ]; then su=postgres; kind=hive; else su=$user; kind=other; fi
    printf "%s\t%s\t%s\t%s\n" "$su" "$user" "$db" "$kind"'
}

running() {
  [[ $(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null) == true ]] ||
    die "container $1 is not running (docker ps lists the running ones)"
}

# ------------------------------------------------------------------------------ backup

backup() {
  local container="" from="" image="" network="" bindir="" dir=backups name=""
  while (($#)); do
    case $1 in
      --container) container=$(value "$@"); shift 2 ;;
      --from) from=$(value "$@"); shift 2 ;;
      --image) image=$(value "$@"); shift 2 ;;
      --network) network=$(value "$@"); shift 2 ;;
      --bindir) bindir=$(value "$@"); shift 2 ;;
      --dir) dir=$(value "$@"); shift 2 ;;
      --name) name=$(value "$@"); shift 2 ;;
      *) usage "backup: unknown argument $1" ;;
    esac
  done
  local dump_tool dump_args roles_cmd
  if [[ -n $from && -n $bindir ]]; then
    [[ -x $bindir/pg_dump && -x $bindir/pg_dumpall ]] || die "no pg_dump and pg_dumpall in $bindir"
    name=${name:-backup}
    dump_tool=("$bindir/pg_dump")
    dump_args=(-Fc --dbname="$from")
    roles_cmd=("$bindir/pg_dumpall" --roles-only --dbname="$from")
    say "backing up $from (with $bindir/pg_dump)"
  elif [[ -n $from ]]; then
    [[ -n $image ]] || usage "backup --from needs --image (the hive image whose pg_dump to use) or --bindir"
    name=${name:-backup}
    # The newer pg_dump reads every older server (PostgreSQL's upgrade advice); -e
    # PGPASSWORD passes the variable by name, so the password is on no command line.
    local run=(docker run --rm -i --network "${network:-bridge}" -e PGPASSWORD -e PGSSLMODE)
    dump_tool=("${run[@]}" --entrypoint pg_dump "$image")
    dump_args=(-Fc --dbname="$from")
    roles_cmd=("${run[@]}" --entrypoint pg_dumpall "$image" --roles-only --dbname="$from")
    say "backing up $from (with $image's pg_dump)"
  else
    [[ -n $container ]] || usage "backup needs --container or --from"
    running "$container"
    local su user db kind
    IFS=$'\t' read -r su user db kind < <(container_env "$container") ||
      die "cannot read POSTGRES_USER/POSTGRES_DB in $container"
    name=${name:-$container}
    dump_tool=(docker exec -u postgres "$container" pg_dump)
    dump_args=(-Fc -U "$su" --dbname="$db")
    roles_cmd=(docker exec -u postgres "$container" pg_dumpall --roles-only -U "$su")
    say "backing up database $db of $container (the API keeps running)"
  fi

  # zstd where pg_dump has it (16 and later): about four times faster than the default
  # gzip on vector data, for a file 5 % larger. pg_restore 17 reads either.
  local version
  version=$("${dump_tool[@]}" --version) || die "cannot run pg_dump --version"
  version=${version#*) }
  if ((${version%%.*} >= 16)); then
    dump_args+=(--compress=zstd)
  fi

  mkdir -p "$dir"
  local stamp base
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  base=$dir/$name-$stamp
  [[ ! -e $base.dump ]] || base=$base-$$
  # Written under a temporary name and renamed when complete: a backup that is there
  # is whole. The roles file holds password hashes, the dump the data: owner only.
  tmp_dump="$dir/.$name-$stamp.dump.partial" tmp_roles="$dir/.$name-$stamp.roles.sql.partial"
  trap 'rm -f "$tmp_dump" "$tmp_roles"' EXIT
  umask 077
  local t0
  t0=$(now)
  "${dump_tool[@]}" "${dump_args[@]}" >"$tmp_dump" || die "pg_dump failed (see above); nothing written"
  "${roles_cmd[@]}" >"$tmp_roles" || die "pg_dumpall --roles-only failed (see above); nothing written"
  sync "$tmp_dump" "$tmp_roles" 2>/dev/null || true
  mv "$tmp_roles" "$base.roles.sql"
  mv "$tmp_dump" "$base.dump"
  trap - EXIT
  say "wrote $base.dump ($(size "$base.dump")) and $base.roles.sql ($(size "$base.roles.sql")) in $(since "$t0")"
}

# ----------------------------------------------------------------------------- restore

# psql as the superuser through the unix socket (peer auth as the postgres account),
# SQL on stdin, names passed as psql variables (quoted by psql as :"name" / :'name').
sql() {
  local dbname=$1
  shift
  docker exec -i -u postgres -e PGOPTIONS='-c client_min_messages=warning' "$container" \
    psql -X -q -At -v ON_ERROR_STOP=1 \
    -v db="$db" -v role="$user" -v tmp="$tmp_db" -v old="$old_db" -d "$dbname" "$@"
}

# pg_restore of the archive on stdin with a TOC list (pg_restore -L) that travels on the
# same stdin ahead of it, NUL-terminated: bash's `read` takes it byte by byte, leaving
# the archive for pg_restore. Nothing is written inside the container.
restore_with_list() {
  local list=$1
  shift
  # (A process substitution, not a pipe: pg_restore may stop reading before the end of
  # the archive, and the writer's SIGPIPE must not count as a failure.)
  docker exec -i -u postgres -e PGOPTIONS "$container" bash -c \
    'IFS= read -r -d "" list; pg_restore -L <(printf "%s\n" "$list") "$@"' pg_restore "$@" \
    < <(printf '%s\0' "$list"; cat "$file")
}

api_stop() { docker exec "$container" hivesup ctl stop "$program"; }
api_start() { docker exec "$container" hivesup ctl start "$program"; }

restore() {
  local program=api health_timeout=${HEALTH_TIMEOUT:-120}
  container="" file=""
  while (($#)); do
    case $1 in
      --container) container=$(value "$@"); shift 2 ;;
      --file) file=$(value "$@"); shift 2 ;;
      --program) program=$(value "$@"); shift 2 ;;
      *) usage "restore: unknown argument $1" ;;
    esac
  done
  [[ -n $container ]] || usage "restore needs --container"
  [[ -n $file ]] || usage "restore needs a file: make agent-restore FILE=backups/NAME-TIMESTAMP.dump"

  # Refusals first: nothing below this block runs unless FILE is a readable archive.
  [[ -e $file ]] || die "refusing to restore: $file does not exist"
  [[ -f $file && -r $file ]] || die "refusing to restore: $file is not a readable file"
  [[ -s $file ]] || die "refusing to restore: $file is empty"
  [[ $(head -c 5 "$file") == PGDMP ]] ||
    die "refusing to restore: $file is not a pg_dump custom-format archive (no PGDMP header); make one with make agent-backup or pg_dump -Fc"
  running "$container"
  local su kind
  IFS=$'\t' read -r su user db kind < <(container_env "$container") ||
    die "cannot read POSTGRES_USER/POSTGRES_DB in $container"
  [[ $kind == hive ]] || die "$container is not a hive container (hivesup is not its PID 1): restore targets the unified images"
  local toc
  toc=$(docker exec -i -u postgres "$container" pg_restore -l <"$file" 2>&1) ||
    die "refusing to restore: $file is not a readable pg_dump archive: ${toc//$'\n'/ }"

  # The swap needs hivesup's control socket: find out now, not after the restore.
  # (`ctl status` exits 1 for a program that is not ok, 3 when no hivesup answers.)
  local ctl_out rc=0
  ctl_out=$(docker exec "$container" hivesup ctl status "$program" 2>&1) || rc=$?
  ((rc == 0 || rc == 1)) ||
    die "refusing to restore: cannot stop and start $program without hivesup ctl in $container: ${ctl_out//$'\n'/ }"

  # Names of the scratch and the swapped-out database; identifiers stop at 63 bytes.
  tmp_db="${db}__restore" old_db="${db}__pre_restore"
  ((${#old_db} <= 63)) || die "database name $db is too long to add a suffix to (63 bytes at most)"

  # One restore per container at a time.
  exec 9>"${TMPDIR:-/tmp}/hive-data-restore-$container.lock"
  flock -n 9 || die "another restore into $container is running"

  [[ $(sql postgres <<<"SELECT count(*) FROM pg_database WHERE datname = :'db'") == 1 ]] ||
    die "$container has no database $db to restore over"
  [[ $(sql postgres <<<"SELECT count(*) FROM pg_database WHERE datname = :'old'") == 0 ]] ||
    die "database $old_db exists (left by an earlier restore that could not drop it): drop or rename it first"

  local t0
  stopped=0 swapped=0 created=0 # globals: the EXIT trap reads them
  t0=$(now)
  trap 'restore_exit $?' EXIT
  restore_exit() {
    local rc=$1
    ((rc == 0)) && return
    if ((!swapped && created)); then
      sql postgres <<<'DROP DATABASE IF EXISTS :"tmp" WITH (FORCE)' >/dev/null 2>&1 || echo "$prog: could not drop $tmp_db; drop it by hand" >&2
    fi
    if ((stopped)); then
      echo "$prog: starting $program again" >&2
      api_start >&2 || echo "$prog: could not start $program: hivesup ctl start $program" >&2
    fi
    if ((!swapped)); then
      echo "$prog: restore failed; database $db is unchanged" >&2
    fi
  }

  # A leftover scratch database of a restore that was killed: nobody uses it.
  sql postgres <<<'DROP DATABASE IF EXISTS :"tmp" WITH (FORCE)' >/dev/null
  say "restoring $file into a new database $tmp_db (the API keeps serving $db)"
  # Same encoding and locale as the database it replaces, owned by the application role.
  created=1
  sql postgres <<'SQL' >/dev/null
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LOCALE_PROVIDER %s LC_COLLATE %L LC_CTYPE %L',
              :'tmp', :'role', pg_encoding_to_char(encoding),
              CASE datlocprovider WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' ELSE 'libc' END,
              datcollate, datctype)
       || CASE datlocprovider WHEN 'i' THEN format(' ICU_LOCALE %L', datlocale)
                              WHEN 'b' THEN format(' BUILTIN_LOCALE %L', datlocale) ELSE '' END
  FROM pg_database WHERE datname = :'db'
\gexec
SQL

  # Schemas and extensions (and their comments) as the superuser: extensions such as
  # vector are not trusted, so the application role could not create them. Everything
  # else as the application role (--role), so it owns every object, whatever role owned
  # it in the dumped server; grants to roles of that server are not carried over.
  local entry='^[0-9]+; [0-9]+ [0-9]+ '
  local first rest
  first=$(grep -E "$entry(SCHEMA|EXTENSION|COMMENT - (SCHEMA|EXTENSION)) " <<<"$toc" || true)
  rest=$(grep -vE "$entry(SCHEMA|EXTENSION|COMMENT - (SCHEMA|EXTENSION)) " <<<"$toc" || true)
  restore_with_list "$first" --no-owner --no-privileges --exit-on-error -d "$tmp_db" ||
    die "pg_restore of schemas and extensions failed (see above)"
  sql "$tmp_db" <<'SQL' >/dev/null
SELECT format('ALTER SCHEMA %I OWNER TO %I', n.nspname, :'role')
  FROM pg_namespace n
 WHERE n.nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
   AND n.nspname NOT IN ('public', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_namespace'::regclass
                      AND d.objid = n.oid AND d.deptype = 'e')
\gexec
SQL
  # Index builds (hnsw above all) get more memory than the server's default 64 MB, in
  # the backend's own memory: a parallel build would put it in /dev/shm, which Docker
  # makes 64 MB, and fail with "could not resize shared memory segment".
  local mem=${RESTORE_MAINTENANCE_WORK_MEM:-512MB}
  PGOPTIONS="-c maintenance_work_mem=$mem -c max_parallel_maintenance_workers=0" \
    restore_with_list "$rest" --no-owner --no-privileges --role="$user" --exit-on-error -d "$tmp_db" ||
    die "pg_restore failed part-way (see above)"
  sql "$tmp_db" <<<'ANALYZE' || die "ANALYZE of the restored database failed"
  say "restored into $tmp_db in $(since "$t0"); stopping $program for the swap"

  local t1
  t1=$(now)
  stopped=1
  api_stop || die "could not stop $program through hivesup"
  # Nothing may be connected to either database while it is renamed; RENAME itself
  # waits up to 5 s for terminated backends to go. Both renames commit together.
  local attempt
  for attempt in 1 2 3 4 5; do
    if sql postgres <<'SQL' >/dev/null; then swapped=1; break; fi
SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity
 WHERE datname IN (:'db', :'tmp') AND pid <> pg_backend_pid();
BEGIN;
ALTER DATABASE :"db" RENAME TO :"old";
ALTER DATABASE :"tmp" RENAME TO :"db";
COMMIT;
SQL
    echo "$prog: swap attempt $attempt failed, retrying" >&2
  done
  ((swapped)) || die "could not swap $tmp_db in for $db (clients kept connecting)"
  say "swapped: $db is the restored database"

  api_start || die "could not start $program through hivesup (the restored database is in place; $old_db still holds the old data)"
  stopped=0
  local deadline=$((SECONDS + health_timeout))
  until docker exec "$container" hivesup health >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$container not healthy ${health_timeout}s after the restore (the restored database is in place; $old_db still holds the old data)"
    sleep 0.5
  done
  say "$program back after $(since "$t1"); dropping the old database"
  sql postgres <<<'DROP DATABASE :"old" WITH (FORCE)' ||
    echo "$prog: could not drop $old_db; drop it by hand" >&2
  say "restore done in $(since "$t0"); $container is healthy"
}

case ${1:-} in
  backup) shift; backup "$@" ;;
  restore) shift; restore "$@" ;;
  *) usage "unknown command ${1:-(none)}" ;;
esac
