#!/usr/bin/env bash
# Soak test (not part of CI; about two minutes, stops by itself, 127.0.0.1 only).
#
# Runs an already built secproxy (no build here) with a TLS listener in front of two Python echo backends, and
# drives many concurrent TLS echo sessions of random sizes (1 B ... 4 MiB, every byte checked) while a chaos loop
# SIGKILLs and restarts the backends and some clients reset (SO_LINGER 0) or stall mid-session. Reports sessions
# ok / cut by a fault / corrupted / hung, and the proxy's descriptor count and VmRSS before and after.
# Exits non-zero when a session was corrupted or hung, or the descriptors did not come back to the start count.
#
#   SECPROXY_BIN=.build/release/secproxy scripts/soak.sh
#
# Environment: SECPROXY_BIN (default .build/release/secproxy, else .build/debug/secproxy), SOAK_SECONDS (load
# duration, default 100, so the whole run takes about 2 minutes), SOAK_WORKERS (concurrent sessions, default 50), SOAK_SEED (random seed).
# Every process is started by scripts/soak.py and stopped by it, by PID.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${SECPROXY_BIN:-}"
if [[ -z "$bin" ]]; then
    if [[ -x .build/release/secproxy ]]; then
        bin=.build/release/secproxy
    else
        bin=.build/debug/secproxy
    fi
fi
if [[ ! -x "$bin" ]]; then
    echo "soak: no secproxy binary at '$bin' (build it first: swift build -c release, or set SECPROXY_BIN)" >&2
    exit 2
fi
for tool in python3 openssl; do
    command -v "$tool" >/dev/null || { echo "soak: $tool is needed" >&2; exit 2; }
done

seconds="${SOAK_SECONDS:-100}"
workers="${SOAK_WORKERS:-50}"
args=(--bin "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" --seconds "$seconds" --workers "$workers")
if [[ -n "${SOAK_SEED:-}" ]]; then args+=(--seed "$SOAK_SEED"); fi

# A hard stop well past the expected end (load + drain), should anything wedge: soak.py cleans up on SIGTERM.
exec timeout --signal=TERM --kill-after=15 "$(( ${seconds%.*} + 90 ))" python3 scripts/soak.py "${args[@]}"
