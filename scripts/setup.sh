#!/bin/sh
# Makes sure the Erlang/OTP first on PATH has what nif_session_cache's build and tests need: OTP 25 or later with
# its NIF headers, ssl, common_test, dialyzer, eunit and PropEr (with its headers), and a rebar3 that runs on it;
# and that Debian's redis-server and openssl are installed, for the shared level's tests.
# With no erl on PATH it installs Debian's OTP. For Debian's OTP it installs what is missing with apt, Elixir
# included (for the Elixir test). For any other OTP it names what is missing and how to get it:
# scripts/otp.sh NN builds OTP NN with PropEr and a rebar3 that runs on it. Idempotent: apt runs only when
# something is missing.
set -eu

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
apt_install() {
    echo "setup: installing $*"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }

# Redis, for the shared level's tests, which start their own servers: Debian's redis-server and redis-cli, whatever
# the OTP. Debian's package would start a system service on port 6379 where an init system runs; the tests use
# free ports of their own and never that one.
command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || apt_install redis-server
# openssl, whose command makes the certificates of the TLS tests (a CA, a server and a client) for each run.
# Sentinel is redis-server --sentinel: no package of its own is needed.
command -v openssl >/dev/null 2>&1 || apt_install openssl

debian_otp="erlang-nox erlang-dev erlang-common-test erlang-dialyzer erlang-eunit erlang-proper erlang-proper-dev"
if ! command -v erl >/dev/null 2>&1; then
    # shellcheck disable=SC2086 # a list of package names
    apt_install $debian_otp rebar3
fi

# What the OTP on PATH is, and which of the pieces it lacks, as Debian package names where it is Debian's own.
probe() {
    erl -noshell -eval '
        Root = code:root_dir(),
        Lib = fun(App) -> is_list(code:lib_dir(App)) end,
        Hrl = fun(App, File) -> Lib(App) andalso filelib:is_regular(filename:join([code:lib_dir(App), "include", File])) end,
        Nif = filelib:wildcard(filename:join(Root, "usr/include/erl_nif.h")) ++
              filelib:wildcard(filename:join(Root, "erts-*/include/erl_nif.h")) =/= [],
        Missing = [Pkg || {Ok, Pkg} <- [{Nif, "erlang-dev"}, {Lib(ssl), "erlang-ssl"}, {Lib(common_test), "erlang-common-test"},
                                        {Lib(dialyzer), "erlang-dialyzer"}, {Lib(eunit), "erlang-eunit"},
                                        {Lib(proper), "erlang-proper"}, {Hrl(proper, "proper.hrl"), "erlang-proper-dev"}],
                         not Ok],
        io:format("~s ~s ~s~n", [erlang:system_info(otp_release), Root, lists:join(",", Missing)]),
        halt().'
}
read -r release root missing <<EOF
$(probe)
EOF
missing=$(echo "${missing:-}" | tr ',' ' ')

[ "$release" -ge 25 ] || { echo "setup: OTP $release at $root is too old: nif_session_cache needs OTP 25 or later" >&2; exit 1; }

debian=false
[ "$root" = /usr/lib/erlang ] && debian=true

if [ -n "$missing" ]; then
    if $debian; then
        # shellcheck disable=SC2086 # a list of package names
        apt_install $missing
    else
        echo "setup: OTP $release at $root lacks:$(echo " $missing" | sed 's/ erlang-/ /g')" >&2
        echo "setup: scripts/otp.sh $release builds OTP $release with all of it; put its bin folder first on PATH." >&2
        exit 1
    fi
fi

if ! rebar3 version >/dev/null 2>&1; then
    if $debian && ! command -v rebar3 >/dev/null 2>&1; then
        apt_install rebar3
    else
        echo "setup: no rebar3 on PATH runs on OTP $release (OTP 29 needs rebar3 3.24 or later)." >&2
        echo "setup: scripts/otp.sh $release puts one in its bin folder; put that folder first on PATH." >&2
        exit 1
    fi
fi

# Elixir, for the Elixir test: Debian's elixir runs on Debian's OTP only.
elixir=none
if $debian; then
    command -v elixir >/dev/null 2>&1 || apt_install elixir
fi
if command -v elixir >/dev/null 2>&1 && command -v mix >/dev/null 2>&1 && elixir -e ':ok' >/dev/null 2>&1; then
    elixir=$(elixir --short-version 2>/dev/null || echo present)
fi

redis=$(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p')
echo "setup: OTP $release at $root, $(rebar3 version 2>/dev/null | awk '{ print $1, $2 }'), Elixir $elixir, Redis $redis: everything is installed"
