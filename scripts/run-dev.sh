#!/usr/bin/env bash
# Builds secproxy and runs it on the development config with the development certificates:
# TLS on 127.0.0.1:8443 and plaintext on 127.0.0.1:8081, both forwarding to 127.0.0.1:8080.
# Installs libssl-dev and openssl with apt-get when they are missing (sudo unless root).
# Usage: scripts/run-dev.sh [debug|release]   (default release)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
configuration="${1:-release}"

if ! pkg-config --exists openssl 2>/dev/null || ! command -v openssl >/dev/null; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq libssl-dev pkg-config openssl
fi
./certs-dev/make-dev-certs.sh
swift build -c "$configuration" --product secproxy
exec ".build/$configuration/secproxy" -c config/dev.toml
