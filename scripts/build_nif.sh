#!/bin/sh
# Builds the NIF in release mode and installs it as priv/nif_session_cache_nif.so.
# Called by rebar3's compile pre-hook; safe to run by hand. Set NIF_PROFILE=debug for a debug build.
set -eu
cd "$(dirname "$0")/.."
profile="${NIF_PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build --quiet --release -p nif_session_cache
else
    cargo build --quiet -p nif_session_cache
fi
mkdir -p priv
# Copy to a temporary name and rename: a running VM that has the old library mapped keeps its inode.
cp "target/$profile/libnif_session_cache.so" priv/.nif_session_cache_nif.so.tmp
mv -f priv/.nif_session_cache_nif.so.tmp priv/nif_session_cache_nif.so
