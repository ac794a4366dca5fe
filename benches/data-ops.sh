#!/usr/bin/env bash
# Times `make agent-backup` and `make agent-restore` (README, "Data") on a database of
# ROWS documents with DIM-dimension vectors and an hnsw index: loads a fresh container,
# backs it up while its API runs, restores into a second fresh container, checks the
# row count and the nearest neighbour of one document on both. A measurement to run by
# hand, not a test (no limit is asserted); the figures go to README "Data".
#
#   benches/data-ops.sh                              100,000 x 384, image hive-agent:latest
#   ROWS=10000 DIM=384 IMAGE=hive-agent:dev benches/data-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rows=${ROWS:-100000} dim=${DIM:-384} image=${IMAGE:-hive-agent:latest}
src=hive-bench-data-src-$$ dst=hive-bench-data-dst-$$
dir=$(mktemp -d /tmp/hive-bench-data.XXXXXX)
cleanup() {
  docker rm -f -v "$src" "$dst" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

start() {
  docker run -d --name "$1" -e POSTGRES_PASSWORD=bench-pw "$image" >/dev/null
  local deadline=$((SECONDS + 300)) s
  until [[ $(s=$(docker inspect -f '{{.State.Health.Status}}' "$1") && echo "$s") == healthy ]]; do
    ((SECONDS < deadline)) || { echo "bench: $1 not healthy after 300 s" >&2; docker logs --tail 30 "$1" >&2; exit 1; }
    sleep 1
  done
}
psql_in() { docker exec -i -u postgres "$1" psql -X -q -At -v ON_ERROR_STOP=1 -d hive_agent; }
elapsed() { awk -v a="$1" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1f", b - a }'; }

echo "bench: $rows rows of vector($dim) with an hnsw index, image $image, $(nproc) cores"
start "$src"
t=${EPOCHREALTIME/,/.}
psql_in "$src" <<SQL
SET ROLE agent;
-- The settings make agent-restore builds indexes with (scripts/data.sh).
SET maintenance_work_mem = '512MB';
SET max_parallel_maintenance_workers = 0;
CREATE TABLE docs (id bigint PRIMARY KEY, body text NOT NULL, embedding vector($dim) NOT NULL);
INSERT INTO docs
SELECT i, 'document ' || i, (SELECT array_agg(random()::real) FROM generate_series(1, $dim) WHERE i > 0)::vector
  FROM generate_series(1, $rows) i;
CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_l2_ops);
SQL
echo "bench: loaded and indexed in $(elapsed "$t") s; database $(psql_in "$src" <<<"SELECT pg_size_pretty(pg_database_size('hive_agent'))")"

# The exact 5 nearest neighbours (sequential scan): the hnsw index is approximate, and
# random 384-dim vectors are its hardest case, so its answers differ between two builds.
knn="SET enable_indexscan = off; SET enable_bitmapscan = off;
SELECT string_agg(id::text, ',') FROM (SELECT id FROM docs ORDER BY embedding <-> (SELECT embedding FROM docs WHERE id = 42) LIMIT 5) s"
before=$(psql_in "$src" <<<"$knn")

t=${EPOCHREALTIME/,/.}
make -s agent-backup CONTAINER="$src" BACKUP_DIR="$dir"
backup_s=$(elapsed "$t")
dump=$(ls "$dir"/*.dump)

start "$dst"
t=${EPOCHREALTIME/,/.}
make -s agent-restore CONTAINER="$dst" FILE="$dump"
restore_s=$(elapsed "$t")

count=$(psql_in "$dst" <<<"SELECT count(*) FROM docs")
after=$(psql_in "$dst" <<<"$knn")
[[ $count == "$rows" ]] || { echo "bench: restored $count rows, want $rows" >&2; exit 1; }
[[ $after == "$before" ]] || { echo "bench: the exact nearest neighbours differ: $before vs $after" >&2; exit 1; }
[[ $(psql_in "$dst" <<<"SELECT indisvalid FROM pg_index WHERE indexrelid = 'docs_hnsw'::regclass") == t ]] ||
  { echo "bench: docs_hnsw missing or invalid after the restore" >&2; exit 1; }
# How much of the restore is the hnsw build: the same build again, with the restore's settings.
t=${EPOCHREALTIME/,/.}
psql_in "$dst" <<<"SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 0; REINDEX INDEX docs_hnsw"
echo "bench: of which the hnsw build alone (REINDEX with the restore's settings): $(elapsed "$t") s"
echo "bench: RESULT rows=$rows dim=$dim dump=$(numfmt --to=iec-i --suffix=B "$(stat -c %s "$dump")") backup=${backup_s}s restore=${restore_s}s (make, end to end)"
