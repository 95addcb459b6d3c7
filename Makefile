# nif_session_cache. Two commands do everything on a fresh Debian 12 machine with Rust:
#   make demo   TLS 1.2 resumption through our cache, beside OTP's default stores, with a report
#   make test   every test: cargo test (the Rust store) and rebar3 ct (NIF, contract, TLS, properties)
# Both install what is missing first (scripts/setup.sh, idempotent).

export REBAR_OFFLINE := 1
ERL_RUN = erl -noshell -kernel logger_level warning -pa _build/default/lib/nif_session_cache/ebin

.PHONY: all setup build demo test test-rust test-erlang lint clean

all: build

setup:
	@scripts/setup.sh

build: setup
	rebar3 compile

demo: build
	$(ERL_RUN) -eval 'nif_session_cache_demo:main().'

test: setup test-rust test-erlang

test-rust:
	cargo test -p session_store

test-erlang: setup
	rebar3 ct

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	rebar3 xref
	rebar3 dialyzer

clean:
	cargo clean
	rm -rf _build priv/*.so
