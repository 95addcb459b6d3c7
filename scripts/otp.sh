#!/bin/sh
# scripts/otp.sh NN: builds Erlang/OTP NN (27 or later) once, from Debian's packages, and prints the path of its bin
# folder. That folder also holds a rebar3 that runs on that OTP, and PropEr is installed among its libraries, so
#   PATH="$(scripts/otp.sh 29):$PATH" make test
# runs everything on OTP 29. Later calls only print the path.
#
# Everything comes from Debian's archive, at the address this machine's apt configuration already uses: the newest
# erlang NN.x source package in trixie, forky, sid or experimental, the newest erlang-proper source, and rebar3's
# architecture-independent package (3.24 or later, built on OTP 27: older ones do not run on 29). Digests are checked
# against apt's signed indexes. The indexes live in the cache folder: the machine's own apt lists are untouched,
# and nothing is installed system-wide but the build dependencies.
#
# Cache folder: $NIF_SESSION_CACHE_OTP_DIR, or ~/.cache/nif_session_cache/otp. A build takes 14-18 minutes on 2 cores.
set -eu

usage() { echo "usage: scripts/otp.sh NN   (an OTP major release, 27 or later)" >&2; exit 2; }
[ $# -eq 1 ] || usage
major=$1
case "$major" in '' | *[!0-9]*) usage ;; esac
[ "$major" -ge 27 ] || { echo "otp.sh: OTP $major: use Debian's own packages (scripts/setup.sh)" >&2; exit 2; }

cache=${NIF_SESSION_CACHE_OTP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nif_session_cache/otp}
prefix="$cache/$major"
bin="$prefix/bin"
log() { echo "otp.sh: $*" >&2; }

if [ -f "$prefix/.complete" ]; then
    echo "$bin"
    exit 0
fi

mkdir -p "$cache"
# One build per release at a time: a second caller waits for the first, then finds it done.
exec 9>"$cache/$major.lock"
flock 9
if [ -f "$prefix/.complete" ]; then
    echo "$bin"
    exit 0
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
need_pkgs=""
for p in build-essential libssl-dev libncurses-dev libjs-jquery libjs-jquery-tablesorter curl ca-certificates xz-utils; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs="$need_pkgs $p"
done
if [ -n "$need_pkgs" ]; then
    log "installing build dependencies:$need_pkgs"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # a list of package names
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $need_pkgs >/dev/null
fi

# The archive this machine already uses for its own release (not -security or -updates), as apt resolves it.
archive=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk '$2 !~ /-/ { print $1; exit }')
[ -n "$archive" ] || { log "no Debian archive found in this machine's apt configuration"; exit 1; }

# Private indexes of the releases that carry newer OTPs: sources for OTP and PropEr, packages for rebar3.
apt_dir="$cache/apt"
mkdir -p "$apt_dir/parts" "$apt_dir/lists/partial" "$apt_dir/cache"
cat >"$apt_dir/parts/otp.sources" <<EOF
Types: deb deb-src
URIs: $archive
Suites: trixie forky sid experimental
Components: main
Architectures: $(dpkg --print-architecture)
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts="-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=$apt_dir/parts -o Dir::State::Lists=$apt_dir/lists"
apt_opts="$apt_opts -o Dir::Cache=$apt_dir/cache -o Dir::State::status=/dev/null -o Debug::NoLocking=1"
if [ -z "$(find "$apt_dir/lists" -name '*Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]; then
    log "reading Debian's indexes"
    # shellcheck disable=SC2086 # a list of options
    # A mirror in mid-sync can fail one index; the others may still be enough, and fetch says when not.
    apt-get $apt_opts update -qq >/dev/null 2>&1 || log "some of Debian's indexes failed to download"
fi

# candidates KIND PKG PATTERN: "version pool-path sha256" of every source package (KIND=src: its orig tarball) or
# binary package (KIND=bin: its .deb) whose upstream version matches PATTERN (grep -E), newest first.
candidates() {
    if [ "$1" = src ]; then
        # shellcheck disable=SC2086 # a list of options
        apt-cache $apt_opts showsrc "$2" 2>/dev/null | awk '
            /^Package: / { ver = ""; dir = ""; sum = ""; insum = 0 }
            /^Version: / { ver = $2 }
            /^Directory: / { dir = $2 }
            /^Checksums-Sha256:/ { insum = 1; next }
            /^[^ ]/ { insum = 0 }
            insum && $3 ~ /\.orig\.tar\.(xz|gz)$/ { sum = $1; file = $3 }
            /^$/ { if (ver != "" && sum != "") print ver, dir "/" file, sum; ver = ""; sum = "" }
            END { if (ver != "" && sum != "") print ver, dir "/" file, sum }'
    else
        # shellcheck disable=SC2086 # a list of options
        apt-cache $apt_opts show "$2" 2>/dev/null | awk '
            /^Version: / { ver = $2 }
            /^Filename: / { file = $2 }
            /^SHA256: / { sum = $2 }
            /^$/ { if (ver != "") print ver, file, sum; ver = "" }
            END { if (ver != "") print ver, file, sum }'
    fi | sort -u | while read -r ver path sha; do
        up=${ver#*:}
        up=${up%-*}
        if echo "$up" | grep -qE "$3"; then echo "$ver $path $sha"; fi
    done | sort -r -V
}

# fetch KIND PKG PATTERN [CHECK]: downloads into the cache the newest candidate that the archive serves (an index
# can name a file its pool no longer holds) and, if given, that the command CHECK accepts when given its path;
# checks its digest against the signed index, and prints "version local-path".
fetch() {
    check=${4:-true}
    found=$(candidates "$1" "$2" "$3")
    [ -n "$found" ] || { log "no $2 matching $3 in trixie, forky, sid or experimental"; return 1; }
    mkdir -p "$cache/dl"
    echo "$found" | while read -r ver path sha; do
        out="$cache/dl/${path##*/}"
        if [ ! -f "$out" ] || ! echo "$sha  $out" | sha256sum -c --status; then
            curl -fsSL --retry 3 -o "$out.part" "${archive%/}/$path" 2>/dev/null || { rm -f "$out.part"; continue; }
            echo "$sha  $out.part" | sha256sum -c --status || { log "${path##*/}: digest mismatch"; rm -f "$out.part"; continue; }
            mv "$out.part" "$out"
        fi
        "$check" "$out" </dev/null || continue
        echo "$ver $out"
        break
    done | grep . || { log "the archive serves none of $2 $(echo "$found" | awk '{ printf "%s ", $1 }')"; return 1; }
}

# Step logs go to the build folder; on failure the tail is shown.
build="$cache/build-$major"
run() {
    step_log="$build/$1.log"
    shift
    "$@" >"$step_log" 2>&1 || { tail -n 40 "$step_log" >&2; log "failed; full log: $step_log"; exit 1; }
}

otp=$(fetch src erlang "^$major\.")
otp_vsn=${otp%% *}
mkdir -p "$build"
# A build that got as far as installing is kept: only the steps after it run again.
if [ "$(cat "$build/otp.built" 2>/dev/null)" != "$otp_vsn" ]; then
    rm -rf "$build/otp"
    mkdir -p "$build/otp"
    log "building OTP $otp_vsn into $prefix (about 15 minutes on 2 cores)"
    tar -xf "${otp#* }" -C "$build/otp" --strip-components=1
    # The +dfsg tarballs leave out common_test's copies of jQuery: link Debian's, as Debian's own package does.
    ln -sf /usr/share/javascript/jquery/jquery.min.js "$build/otp/lib/common_test/priv/jquery-latest.js"
    ln -sf /usr/share/javascript/jquery-tablesorter/jquery.tablesorter.min.js \
        "$build/otp/lib/common_test/priv/jquery.tablesorter.min.js"
    cd "$build/otp"
    # No --without-wx: without it the debugger is not built, and common_test needs the debugger.
    run configure ./configure --prefix="$prefix" --without-javac --without-jinterface --without-odbc \
        --without-megaco --without-diameter
    run make make -j"$(nproc)"
    echo "$otp_vsn" >"$build/otp.built"
fi
rm -rf "$prefix"
cd "$build/otp"
run install make install

PATH="$bin:$PATH"
export PATH

# rebar3: Debian's package holds a self-contained escript, compiled by the OTP it was built on, and a newer OTP's
# beams do not load on an older one (sid's 3.28, built on OTP 28, does not run on 27). So the newest that runs.
rebar3_runs() {
    rm -rf "$build/rebar3"
    mkdir -p "$build/rebar3"
    dpkg-deb -x "$1" "$build/rebar3" && "$build/rebar3/usr/bin/rebar3" version >/dev/null 2>&1
}
rebar=$(fetch bin rebar3 '^3\.(2[4-9]|[3-9][0-9])' rebar3_runs)
log "rebar3 ${rebar%% *}"
cp "$build/rebar3/usr/bin/rebar3" "$bin/rebar3"

# PropEr, compiled on this OTP and installed among its libraries, where code:lib_dir(proper) finds it.
proper=$(fetch src erlang-proper '^1\.')
proper_vsn=$(echo "${proper%% *}" | sed -e 's/^[0-9]*://' -e 's/-[^-]*$//')
log "PropEr $proper_vsn"
mkdir -p "$build/proper"
tar -xf "${proper#* }" -C "$build/proper" --strip-components=1
cd "$build/proper"
run proper env HOME="$build" REBAR_OFFLINE=1 rebar3 compile
proper_lib="$prefix/lib/erlang/lib/proper-$proper_vsn"
mkdir -p "$proper_lib"
cp -rL _build/default/lib/proper/ebin include "$proper_lib/"

cd "$cache"
run check erl -noshell -eval '
    {ok, _} = application:ensure_all_started(ssl),
    true = is_list(code:lib_dir(proper)),
    {module, _} = code:ensure_loaded(proper),
    true = is_list(code:lib_dir(common_test)),
    halt().'
rm -rf "$build"
touch "$prefix/.complete"
log "OTP $otp_vsn is ready"
echo "$bin"
