#!/usr/bin/env bash
# The Debian/Ubuntu packages that building secproxy and running its tests need, in one place, and the one
# function that installs the missing ones. Sourced by scripts/test.sh and .ci/run; run it directly to
# install them (`scripts/system-packages.sh`) or to list them (`scripts/system-packages.sh --list`).
#
# Package names checked on Debian 12 (bookworm) with apt-cache policy.

# What each package is for:
#   libssl-dev pkg-config   the COpenSSL system library (OpenSSL 3 headers, pkg-config openssl)
#   openssl                 test CAs and certificates, `openssl s_client` as a TLS test client
#   python3                 TLS test clients and backends (standard library only)
#   curl ca-certificates    manual checks from the README; the CA bundle is backend_tls's default
#   systemd                 systemd-analyze verify/security on the unit (PID 1 need not be systemd)
#   dpkg-dev binutils       scripts/build-deb.sh: dpkg-shlibdeps, strip, objdump
#   lintian                 checks the .deb
#   man-db groff-base       `man -l` and `groff -ww -man` on the man pages
#   prometheus              promtool: check/test the alerting rules, check the /metrics output
SECPROXY_SYSTEM_PACKAGES=(
    libssl-dev pkg-config openssl python3 curl ca-certificates
    systemd dpkg-dev binutils lintian man-db groff-base prometheus
)

# Installs the packages of SECPROXY_SYSTEM_PACKAGES that are missing (apt-get; sudo unless root). Does
# nothing, and asks nothing from the network, when all are installed. Services that packages bring (the
# prometheus server) are not started: the tests run their own instances on 127.0.0.1.
install_system_packages() {
    local missing=() package
    for package in "${SECPROXY_SYSTEM_PACKAGES[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "system packages: all ${#SECPROXY_SYSTEM_PACKAGES[@]} installed"
        return 0
    fi
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null; then
            echo "system packages: missing ${missing[*]}; not root and no sudo: install them yourself" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    echo "system packages: installing ${missing[*]}"
    # invoke-rc.d and deb-systemd-invoke ask policy-rc.d whether to start a service; 101 = no. Only a
    # policy-rc.d of our own is removed afterwards.
    local policy=/usr/sbin/policy-rc.d placed=no
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\n# placed by secproxy scripts/system-packages.sh during apt-get install\nexit 101\n' |
            "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 0755 "$policy"
        placed=yes
    fi
    local status=0
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq || status=$?
    if [[ $status -eq 0 ]]; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null || status=$?
    fi
    if [[ "$placed" == yes ]]; then
        "${sudo[@]}" rm -f "$policy"
    fi
    if [[ $status -ne 0 ]]; then
        echo "system packages: apt-get failed (exit $status)" >&2
    fi
    return "$status"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    set -euo pipefail
    if [[ "${1:-}" == --list ]]; then
        printf '%s\n' "${SECPROXY_SYSTEM_PACKAGES[@]}"
    else
        install_system_packages
    fi
fi
