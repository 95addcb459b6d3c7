#!/bin/sh
# scripts/matrix.sh 25 27 29: runs `make test` and `make demo` on each OTP release named, one after another, and
# ends with one line per release. 25 is Debian's OTP (scripts/setup.sh installs it); later releases are built
# once by scripts/otp.sh. Logs: _build/matrix/otpNN.log. Exits non-zero if any release failed.
set -u
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: scripts/matrix.sh NN..." >&2; exit 2; }
mkdir -p _build/matrix
summary=""
status=0
for major in "$@"; do
    log="_build/matrix/otp$major.log"
    : >"$log" # counts are read from this log: start it empty
    if [ "$major" = 25 ]; then
        scripts/setup.sh >>"$log" 2>&1 && bin=/usr/lib/erlang/bin || bin=""
    else
        bin=$(scripts/otp.sh "$major" 2>>"$log") || bin=""
    fi
    if [ -z "$bin" ]; then
        line="OTP $major: FAILED to provide OTP $major (see $log)"
        status=1
    else
        echo "== OTP $major ($bin)"
        start=$(date +%s)
        PATH="$bin:$PATH" make test >>"$log" 2>&1
        test_rc=$?
        PATH="$bin:$PATH" make demo >>"$log" 2>&1
        demo_rc=$?
        counts=$(scripts/count_results.sh "$log")
        verdict=passed
        [ "$test_rc" -eq 0 ] && [ "$demo_rc" -eq 0 ] || { verdict=FAILED; status=1; }
        line="OTP $major: $verdict: make test exit $test_rc ($counts), make demo exit $demo_rc, $(( $(date +%s) - start )) s"
    fi
    echo "$line"
    summary="$summary$line
"
done
echo
printf '%s' "$summary"
exit "$status"
