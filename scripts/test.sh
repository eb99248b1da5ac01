#!/usr/bin/env bash
# The one test command, on a fresh Debian/Ubuntu machine with Swift 6: installs the system packages the
# build and the tests need when they are missing (scripts/system-packages.sh: apt-get, sudo unless root),
# builds the release binary the packaging tests put into the .deb, then runs `swift test` with any arguments
# given here (e.g. `scripts/test.sh --filter PackagingTests`). .ci/run calls exactly this.
#
# SECPROXY_RELEASE_BUILD=auto|yes|no: build `.build/release/secproxy` (linked with --static-swift-stdlib,
# as a package needs) before the tests. auto (default): unless a --filter/--skip selection leaves the
# packaging tests out. The tests find it through SECPROXY_RELEASE_BIN.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/system-packages.sh
source scripts/system-packages.sh
install_system_packages || echo "test.sh: continuing without them; the tests that need them will say so" >&2

release_build="${SECPROXY_RELEASE_BUILD:-auto}"
if [[ "$release_build" == auto ]]; then
    release_build=yes
    arguments=" $* "
    if [[ "$arguments" =~ \ --filter[\ =] && "$arguments" != *Packaging* ]]; then
        release_build=no
    fi
fi
if [[ "$release_build" == yes ]]; then
    echo "swift build -c release --static-swift-stdlib --product secproxy (for the .deb)"
    started=$(date +%s)
    swift build -c release --static-swift-stdlib --product secproxy
    echo "release build: $(( $(date +%s) - started ))s"
    SECPROXY_RELEASE_BIN="$(swift build -c release --static-swift-stdlib --show-bin-path)/secproxy"
    export SECPROXY_RELEASE_BIN
fi

exec swift test "$@"
