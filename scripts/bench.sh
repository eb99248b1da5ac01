#!/usr/bin/env bash
# secproxy's benchmarks.
#
#   scripts/bench.sh [OPTIONS...]          end to end: secproxy side by side with HAProxy, stunnel, hitch and
#                                          nginx (builds the release binary, then runs the bench harness);
#                                          OPTIONS go to the harness: --quick, --proxies haproxy,secproxy,
#                                          --rounds N, --out DIR, --pin, ... (help lists them)
#   scripts/bench.sh micro [FILTER] [ARGS...]
#                                          in process: the Benchmarks/ package (ordo-one/benchmark):
#                                          handshakes, TLS records, glue forwarding; FILTER is a regex that
#                                          matches whole names ('TLS13.*', 'Glue.*'); ARGS go to the plugin
#   scripts/bench.sh check [FILTER]        the micro benchmarks' mallocs per operation against the committed
#                                          Benchmarks/Thresholds (exact counts, the same on any machine with
#                                          the same toolchain and libraries); fails on any change
#   scripts/bench.sh update-thresholds [FILTER]
#                                          rewrites Benchmarks/Thresholds from a run (mallocs only: times
#                                          depend on the machine); commit them with the change that moved them
#   scripts/bench.sh help
#
# The harness is looked for in $SECPROXY_BENCH_DIR, else in shared/bench next to the repository
# (../shared/bench/run.sh from its root). Nothing here is part of `swift build`, `swift test` or CI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    local dir="${SECPROXY_BENCH_DIR:-$(dirname "$ROOT")/shared/bench}"
    if [ -f "$dir/run.sh" ]; then
        echo
        echo "The harness ($dir/run.sh) takes:"
        bash "$dir/run.sh" --help
    fi
}

no_harness() {
    cat >&2 <<EOF
bench.sh: the side-by-side harness was not found (looked for $1/run.sh).

It is a separate folder of scripts (run.sh, lib/bench.py, adapters/), kept next to the repository as
shared/bench, that runs secproxy and the same TLS-terminating proxies on this machine in one run — HAProxy,
stunnel, hitch, nginx (stream + ssl) — each with one worker, TLS 1.3 and an ECDSA P-256 certificate, in
front of one plain nginx backend, and reports CPU per handshake, per resumption, per small request and per
GB, requests/s, latency and memory per idle connection, also as ratios to HAProxy.

To use it: put it at $(dirname "$ROOT")/shared/bench, or point SECPROXY_BENCH_DIR at its folder, then
run this script again. It installs the peers it misses with apt; to install them yourself (Debian/Ubuntu):

    sudo apt-get install haproxy stunnel4 hitch nginx libnginx-mod-stream wrk openssl python3

(keep the packaged services from starting on public ports: e.g. create /usr/sbin/policy-rc.d that exits
101 while installing, or 'systemctl disable --now haproxy nginx hitch stunnel4' afterwards).

The in-process micro benchmarks need none of this: scripts/bench.sh micro
EOF
    exit 2
}

micro() {
    local args=()
    if [ $# -gt 0 ] && [[ "$1" != -* ]]; then
        args+=(--filter "$1")
        shift
    fi
    # The plugin builds Benchmarks/ (and secproxy's libraries) in release mode, then runs each benchmark.
    exec swift package --package-path "$ROOT/Benchmarks" benchmark "${args[@]}" "$@"
}

check_thresholds() {
    local args=()
    [ $# -gt 0 ] && args+=(--filter "$1")
    exec swift package --package-path "$ROOT/Benchmarks" benchmark thresholds check \
        --path Benchmarks/Thresholds --no-progress "${args[@]}"
}

update_thresholds() {
    local args=()
    [ $# -gt 0 ] && args+=(--filter "$1")
    swift package --package-path "$ROOT/Benchmarks" --allow-writing-to-package-directory benchmark \
        thresholds update --path Benchmarks/Thresholds --no-progress "${args[@]}"
    # The tool writes every metric's p90; only the malloc counts hold on another machine.
    python3 - "$ROOT/Benchmarks/Thresholds" <<'PY'
import glob, json, sys
for path in sorted(glob.glob(sys.argv[1] + "/*.p90.json")):
    with open(path) as f:
        values = json.load(f)
    with open(path, "w") as f:
        json.dump({"mallocCountTotal": values["mallocCountTotal"]}, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"{path.rsplit('/', 1)[-1]}: {values['mallocCountTotal']} mallocs per sample")
PY
}

end_to_end() {
    local dir="${SECPROXY_BENCH_DIR:-$(dirname "$ROOT")/shared/bench}"
    [ -f "$dir/run.sh" ] || no_harness "$dir"
    echo "bench.sh: building secproxy (release)" >&2
    swift build -c release --product secproxy
    local bin
    bin="$(swift build -c release --show-bin-path)/secproxy"
    [ -x "$bin" ] || { echo "bench.sh: no binary at $bin" >&2; exit 1; }
    echo "bench.sh: $dir/run.sh --secproxy-bin $bin $*" >&2
    exec bash "$dir/run.sh" --secproxy-bin "$bin" "$@"
}

case "${1:-}" in
    micro) shift; micro "$@" ;;
    check) shift; check_thresholds "$@" ;;
    update-thresholds) shift; update_thresholds "$@" ;;
    help | -h | --help) usage ;;
    *) end_to_end "$@" ;;
esac
