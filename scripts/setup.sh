#!/bin/sh
# Installs what nif_session_cache needs on a fresh Debian 12 machine that has only Rust: Erlang/OTP with its
# headers, rebar3, common_test, dialyzer, eunit and PropEr (with its headers), all from Debian. Idempotent: apt runs only when
# something is missing.
set -eu

missing=""
need_command() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need_file() { [ -e "$1" ] || missing="$missing $2"; }
need_app() { ls -d /usr/lib/erlang/lib/"$1"-* >/dev/null 2>&1 || missing="$missing $2"; }
need_header() { ls /usr/lib/erlang/lib/"$1"-*/include/"$2" >/dev/null 2>&1 || missing="$missing $3"; }

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
need_command erl erlang-nox
need_file /usr/lib/erlang/usr/include/erl_nif.h erlang-dev
need_command rebar3 rebar3
need_app common_test erlang-common-test
need_app dialyzer erlang-dialyzer
need_app eunit erlang-eunit
need_app proper erlang-proper
need_header proper proper.hrl erlang-proper-dev

if [ -z "$missing" ]; then
    echo "setup: everything is installed"
    exit 0
fi

echo "setup: installing$missing"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -qq
# shellcheck disable=SC2086 # $missing is a list of package names
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "setup: done"
