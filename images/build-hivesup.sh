#!/bin/sh
# Builder-stage steps shared by Dockerfile.agent and Dockerfile.genie. Three phases, each
# its own RUN so Docker caches them separately: the toolchain, the dependencies (rebuilt
# only when Cargo.toml/Cargo.lock change), then hivesup itself.
set -eu
export DEBIAN_FRONTEND=noninteractive

case "${1:?usage: build-hivesup.sh toolchain|deps|app}" in
toolchain)
  apt-get update
  apt-get install -y --no-install-recommends cargo ca-certificates
  rm -rf /var/lib/apt/lists/*
  ;;
deps)
  # Download and build every dependency against placeholder sources, so this layer is
  # reused until Cargo.toml or Cargo.lock change. If the placeholders cannot satisfy the
  # manifest (say it names extra targets), skip the warm-up: the `app` phase builds for
  # real and reports any error, network errors included.
  mkdir -p src
  echo 'fn main() {}' >src/main.rs
  : >src/lib.rs
  { cargo fetch --locked && cargo build --release --locked; } ||
    echo "build-hivesup: dependency warm-up skipped, see the app phase"
  rm -rf src
  ;;
app)
  # COPY keeps the files' old mtimes, which cargo would take as older than the
  # placeholder build above: touch them so hivesup itself is rebuilt.
  find src -type f -exec touch {} +
  cargo build --release --locked --bin hivesup
  install -m 0755 target/release/hivesup /usr/local/bin/hivesup
  ;;
*)
  echo "build-hivesup: unknown phase $1" >&2
  exit 2
  ;;
esac
