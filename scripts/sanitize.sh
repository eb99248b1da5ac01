#!/usr/bin/env bash
# Runs the unit-test targets under AddressSanitizer and ThreadSanitizer (issue 7 §4).
#
#   scripts/sanitize.sh [address|thread|all]      (default: all)
#
# Only the in-process unit tests: SecProxyConfigTests, SecProxyTLSTests and SecProxyCoreTests. The
# end-to-end and CLI targets spawn the secproxy binary, which these flags do not instrument (a sanitized
# test process would test an unsanitized daemon). Each sanitizer builds in its own folder (.build-asan,
# .build-tsan; ignored by git). Prints the test counts and the number of sanitizer reports; exits 1 on a
# failed test or any report. Logs: .build-asan/sanitize.log, .build-tsan/sanitize.log.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
which=${1:-all}
case "$which" in address) sanitizers=(address) ;; thread) sanitizers=(thread) ;; all) sanitizers=(address thread) ;;
*)
    echo "usage: $0 [address|thread|all]" >&2
    exit 2
    ;;
esac
filter='^(SecProxyConfigTests|SecProxyTLSTests|SecProxyCoreTests)\.'

# LeakSanitizer is off for the unit tests: the test runner (XCTest, Foundation, the Swift runtime) keeps
# one-time allocations to the end, which LSan reports at exit. Leaks per input are what the fuzzers check
# (scripts/fuzz.sh runs with ASan's leak checker on).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=0:print_summary=1}"
# TSan: scripts/tsan-suppressions.txt lists the reports that are not races, each with its reason.
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0:report_signal_unsafe=0:suppressions=$root/scripts/tsan-suppressions.txt:print_suppressions=0}"

failed=0
for sanitizer in "${sanitizers[@]}"; do
    case "$sanitizer" in address) scratch=.build-asan pattern='ERROR: AddressSanitizer' ;;
    thread) scratch=.build-tsan pattern='WARNING: ThreadSanitizer' ;; esac
    echo "== $sanitizer: building in $scratch" >&2
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch" >&2
    log="$scratch/sanitize.log"
    status=0
    swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" --filter "$filter" >"$log" 2>&1 || status=$?
    summary=$(grep -E "^\s*Executed [0-9]+ tests?" "$log" | tail -1 | sed 's/^[[:space:]]*//')
    reports=$(grep -c "$pattern" "$log" || true)
    echo "$sanitizer: ${summary:-no test summary}; $reports sanitizer report(s); swift test exit status $status"
    if [[ $status -ne 0 || $reports -ne 0 ]]; then
        failed=1
        grep -E "$pattern|^SUMMARY|error: |failed \(" "$log" | head -40 || true
    fi
done
exit $failed
