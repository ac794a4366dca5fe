# The side-by-side benchmark (issue 4): hivesup against supervisord, s6, tini and
# dumb-init. Included by the top-level Makefile; benches/README.section.md explains the
# figures. Both targets print one Markdown table and also write it, with the raw
# figures, to $(BENCH_OUT)/table.md and results.json. Neither asserts a wall-clock limit:
# they fail only when a scenario could not run at all.
#
#   make bench        every scenario, 5 repetitions, containers included (~25 min here)
#   make bench-short  2 repetitions, no containers, supervisord's 10,000 orphans capped
#                     at 20 s (it needs ~100 s): about 3 minutes here, for CI

BENCH_TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BENCH_HIVESUP := $(BENCH_TARGET_DIR)/release/hivesup
BENCH_OUT ?= $(BENCH_TARGET_DIR)/bench
BENCH_ARGS ?=

.PHONY: bench bench-short bench-deps bench-build

bench-deps:
	bash .ci/bench-deps.sh

bench-build:
	cargo build --release

bench: bench-deps bench-build
	python3 benches/bench.py --hivesup $(BENCH_HIVESUP) --out $(BENCH_OUT) $(BENCH_ARGS)

bench-short: bench-deps bench-build
	python3 benches/bench.py --short --hivesup $(BENCH_HIVESUP) --out $(BENCH_OUT) $(BENCH_ARGS)
