# nif_session_cache. Two commands do everything on a fresh Debian 12 machine with Rust:
#   make demo   TLS 1.2 resumption through our cache, beside OTP's default stores, with a report
#   make test   every test: cargo test (the Rust store, codec and shared level, against a Redis it starts), rebar3 ct (NIF, contract, TLS, configuration,
#               properties) and the Elixir test
# Both run on the Erlang/OTP first on PATH (25 or later) and install what is missing first (scripts/setup.sh,
# idempotent). PATH="$(scripts/otp.sh 29):$PATH" make test runs them on OTP 29; make test-matrix on 25, 27, 29.

export REBAR_OFFLINE := 1
# One build folder per OTP release: beams compiled by one release are not for another. Expanded when a recipe
# runs, so after setup has installed an OTP on a fresh machine.
OTP_RELEASE = $(shell erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().' 2>/dev/null)
export REBAR_BASE_DIR = _build/otp$(OTP_RELEASE)
APP_DIR = $(REBAR_BASE_DIR)/default/lib/nif_session_cache
ERL_RUN = erl -noshell -kernel logger_level warning -pa $(APP_DIR)/ebin -pa $(APP_DIR)/dev

.PHONY: all setup build demo test test-rust test-erlang test-elixir test-matrix lint bench bench-handshakes valgrind clean

all: build

setup:
	@scripts/setup.sh

build: setup
	rebar3 compile

demo: build
	$(ERL_RUN) -eval 'nif_session_cache_demo:main().'

test: setup test-rust test-erlang test-elixir

test-rust:
	cargo test -p session_nif -p session_codec -p session_store -p session_share

test-erlang: setup
	rebar3 ct

test-elixir: setup
	@scripts/elixir_test.sh

# make test and make demo on OTP 25 (Debian's), 27 and 29 (built once by scripts/otp.sh), one after another.
test-matrix:
	@scripts/matrix.sh 25 27 29

# Benchmarks, side by side with OTP's own stores in one VM; tables on stdout, results.term and chart.svg in
# bench/results/. Never part of `make test`. BENCH_OPTS overrides options, e.g. BENCH_OPTS='#{sizes => [1000]}'.
BENCH_OPTS ?= \#{}
bench: build
	$(ERL_RUN) +P 2000000 -eval 'nif_session_cache_bench:run(maps:merge(#{out => "bench/results"}, $(BENCH_OPTS))), halt().'

# The headline: TLS 1.2 handshake latency against the listener cache's size (0, 100k, 1M sessions), with OTP's
# default store, nif_session_cache and reuse_sessions off; tables on stdout, handshakes.term and handshakes.svg in
# bench/results/. HANDSHAKES_OPTS overrides options, e.g. HANDSHAKES_OPTS='#{sizes => [0, 100000]}'.
HANDSHAKES_OPTS ?= \#{}
bench-handshakes: build
	$(ERL_RUN) +P 2000000 -eval 'nif_session_cache_bench_handshakes:run(maps:merge(#{out => "bench/results"}, $(HANDSHAKES_OPTS))), halt().'

# The Rust store's tests under valgrind memcheck (leaks and invalid accesses fail the run).
valgrind: setup
	@command -v valgrind >/dev/null || { echo "valgrind: apt-get install valgrind"; exit 1; }
	cargo test -p session_codec -p session_store --no-run --message-format=json 2>/dev/null \
	  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' > target/valgrind-tests.txt
	@for t in $$(cat target/valgrind-tests.txt); do \
	  echo "== valgrind $$t"; \
	  PROPTEST_CASES=32 valgrind --quiet --error-exitcode=1 --leak-check=full --show-possibly-lost=no --errors-for-leak-kinds=definite,indirect \
	    $$t --test-threads=1 || exit 1; \
	done

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	rebar3 xref
	rebar3 dialyzer

clean:
	cargo clean
	rm -rf _build priv/*.so test/elixir/_build
