#!/bin/sh
# Runs test/elixir, an Elixir application that depends on this checkout as a user's mix project would, with ExUnit:
# a real TLS 1.2 resumption through our cache, configured from config/config.exs. Where no Elixir runs on the OTP
# first on PATH, it says so plainly and exits 0 (Debian's elixir serves Debian's OTP only).
set -eu
cd "$(dirname "$0")/../test/elixir"

release=$(erl -noshell -eval 'io:format("~s", [erlang:system_info(otp_release)]), halt().')
root=$(erl -noshell -eval 'io:format("~s", [code:root_dir()]), halt().')
not_run() {
    echo "elixir test: NOT RUN: $1"
    exit 0
}
command -v mix >/dev/null 2>&1 || not_run "no Elixir on PATH for OTP $release (on Debian's OTP, scripts/setup.sh installs it)"
case "$(command -v elixir)" in
    /usr/bin/*) [ "$root" = /usr/lib/erlang ] || not_run "Debian's Elixir runs on Debian's OTP only, not on OTP $release at $root" ;;
esac

# mix cannot fetch its own rebar3 without hex: give it the one on PATH, which builds our dependency.
MIX_REBAR3=$(command -v rebar3)
export MIX_REBAR3
MIX_ENV=test
export MIX_ENV
mix test
