"""Reference API of the hive images: stands in for your own app and proves the stack.

- GET  /api/v1/health          database reachable and the `vector` extension present (else 503)
- POST /api/v1/vectors         store {"label": str, "embedding": [float, ...]} (3 dimensions)
- GET  /api/v1/vectors         how many rows are stored
- POST /api/v1/vectors/search  {"embedding": [...], "k": 3} -> nearest rows by `<->` (L2)

The database comes from DATABASE_URL, or, when that is unset, from the same variables
the postgres bootstrap reads: POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD (each also as
*_FILE) and DATABASE_HOST/DATABASE_PORT (default 127.0.0.1:5432). A password given as
POSTGRES_PASSWORD(_FILE) is passed to the driver separately, never put in the URL.
"""

import contextlib
import os

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

DIMENSIONS = 3


def _env(name):
    """NAME, or the contents of the file named by NAME_FILE (Docker secrets)."""
    value = os.environ.get(name)
    if value:
        return value
    path = os.environ.get(name + "_FILE")
    if path:
        with open(path, encoding="utf-8") as f:
            return f.read().rstrip("\r\n")
    return None


def _conninfo():
    url = os.environ.get("DATABASE_URL")
    kwargs = {"connect_timeout": 3, "application_name": "hive-api"}
    if url:
        conninfo = url
    else:
        user = _env("POSTGRES_USER") or "postgres"
        conninfo = psycopg.conninfo.make_conninfo(
            host=os.environ.get("DATABASE_HOST", "127.0.0.1"),
            port=os.environ.get("DATABASE_PORT", "5432"),
            user=user,
            dbname=_env("POSTGRES_DB") or user,
        )
    if "password" not in psycopg.conninfo.conninfo_to_dict(conninfo):
        password = _env("POSTGRES_PASSWORD")
        if password:
            kwargs["password"] = password
    return conninfo, kwargs


CONNINFO, CONNECT_KWARGS = _conninfo()


def connect():
    return psycopg.connect(CONNINFO, **CONNECT_KWARGS)


@contextlib.asynccontextmanager
async def lifespan(_app):
    # The API owns its schema; the bootstrap only provides the role, database and extension.
    # Every uvicorn worker runs this; concurrent CREATE TABLE IF NOT EXISTS can still
    # collide in the catalog, so serialise it on a transaction-level advisory lock.
    with connect() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('hive-api schema'))")
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS items ("
            f" id bigserial PRIMARY KEY,"
            f" label text NOT NULL,"
            f" embedding vector({DIMENSIONS}) NOT NULL)"
        )
    yield


app = FastAPI(title="hive reference API", lifespan=lifespan)


class Item(BaseModel):
    label: str
    embedding: list[float] = Field(min_length=DIMENSIONS, max_length=DIMENSIONS)


class Query(BaseModel):
    embedding: list[float] = Field(min_length=DIMENSIONS, max_length=DIMENSIONS)
    k: int = Field(default=3, ge=1, le=100)


def _vector(values):
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


@app.get("/api/v1/health")
def health():
    try:
        with connect() as conn:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    except psycopg.Error as e:
        return JSONResponse({"status": "error", "database": type(e).__name__}, status_code=503)
    if row is None:
        return JSONResponse({"status": "error", "database": "ok", "vector": None}, status_code=503)
    return {"status": "ok", "database": "ok", "vector": row[0]}


@app.post("/api/v1/vectors", status_code=201)
def store(item: Item):
    with connect() as conn:
        (item_id,) = conn.execute(
            "INSERT INTO items (label, embedding) VALUES (%s, %s::vector) RETURNING id",
            (item.label, _vector(item.embedding)),
        ).fetchone()
    return {"id": item_id}


@app.get("/api/v1/vectors")
def count():
    with connect() as conn:
        (n,) = conn.execute("SELECT count(*) FROM items").fetchone()
    return {"count": n}


@app.post("/api/v1/vectors/search")
def search(query: Query):
    with connect() as conn:
        rows = conn.execute(
            "SELECT id, label, embedding::text, embedding <-> %s::vector AS distance"
            " FROM items ORDER BY embedding <-> %s::vector LIMIT %s",
            (_vector(query.embedding), _vector(query.embedding), query.k),
        ).fetchall()
    return {
        "results": [
            {"id": r[0], "label": r[1], "embedding": [float(x) for x in r[2].strip("[]").split(",")], "distance": r[3]}
            for r in rows
        ]
    }
