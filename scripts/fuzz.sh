#!/usr/bin/env bash
# Builds one libFuzzer target of Fuzz/ (with -sanitize=fuzzer,address) and runs it for a bounded time.
#
#   scripts/fuzz.sh TARGET SECONDS [LIBFUZZER_OPTION...]
#   TARGET: FuzzConfig | FuzzProxyProtocol | FuzzTLSHandler
#
# The committed seeds (Fuzz/Corpus/TARGET) are read but never written: new inputs go to a working corpus
# under Fuzz/.work/ (ignored by git), crashes, leaks, timeouts and OOMs to Fuzz/.work/artifacts/TARGET/.
# Prints the number of executions and of crashes found; exits 1 when there was one.
# FUZZ_CONFIGURATION=debug builds without optimisation (slower, sometimes finds other things).
set -euo pipefail

usage() {
    echo "usage: $0 FuzzConfig|FuzzProxyProtocol|FuzzTLSHandler SECONDS [LIBFUZZER_OPTION...]" >&2
    exit 2
}
[[ $# -ge 2 ]] || usage
target=$1
seconds=$2
shift 2
case "$target" in FuzzConfig | FuzzProxyProtocol | FuzzTLSHandler) ;; *) usage ;; esac
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/Fuzz"
configuration=${FUZZ_CONFIGURATION:-release}

echo "building $target ($configuration, -sanitize=fuzzer,address)..." >&2
# --sanitize links libFuzzer's main instead of the executable's; -Xswiftc instruments the dependencies too
# (the code under test lives in the main package), not only the target's own file.
swift build --package-path "$fuzz" -c "$configuration" --product "$target" \
    --sanitize=fuzzer --sanitize=address -Xswiftc -sanitize=fuzzer,address >&2
binary="$fuzz/.build/$configuration/$target"

work="$fuzz/.work/corpus/$target"
artifacts="$fuzz/.work/artifacts/$target"
mkdir -p "$work" "$artifacts"
options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$artifacts/")
dictionary="$fuzz/Dictionaries/$target.dict"
[[ -f "$dictionary" ]] && options+=(-dict="$dictionary")
case "$target" in
FuzzConfig) options+=(-max_len=8192) ;;
FuzzProxyProtocol) options+=(-max_len=4200) ;;
FuzzTLSHandler) options+=(-max_len=16384) ;;
esac

before=$(find "$artifacts" -type f | wc -l)
log="$fuzz/.work/$target.log"
echo "running $target for ${seconds}s (log: $log)..." >&2
status=0
# The deadline is libFuzzer's own; `timeout` only catches a run that ignores it.
timeout --signal=KILL $((seconds + 300)) "$binary" "${options[@]}" "$@" "$work" "$fuzz/Corpus/$target" \
    >"$log" 2>&1 || status=$?
after=$(find "$artifacts" -type f | wc -l)

executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
crashes=$((after - before))
echo "$target: ${executions:-?} executions in ${seconds}s (${rate:-?}/s), $crashes crash(es), exit status $status"
if [[ $crashes -gt 0 || $status -ne 0 ]]; then
    grep -E "^==[0-9]+==ERROR|^SUMMARY|Fatal error|Test unit written" "$log" | head -20 || true
    find "$artifacts" -type f -newer "$binary" | head -20
    exit 1
fi
