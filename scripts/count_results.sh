#!/bin/sh
# scripts/count_results.sh LOG: "N passed, N failed" summed over every test run that LOG records: cargo test
# ("test result: ok. 8 passed; 0 failed"), rebar3 ct ("All 12 tests passed." or "Failed 2 tests. Passed 10 tests.")
# and ExUnit ("3 tests, 1 failure"). A log may hold several runs (one per OTP release): all are summed.
set -eu
awk '
    /^test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed/ { p += $4; f += $6 }
    /^All [0-9]+ tests passed\./ { p += $2 }
    /^Failed [0-9]+ tests\. Passed [0-9]+ tests\./ { f += $2; p += $5 }
    /^[0-9]+ tests?, [0-9]+ failures?/ { sub(/,/, "", $1); f += $3; p += $1 - $3 }
    END { printf "%d passed, %d failed\n", p, f }' "$1"
