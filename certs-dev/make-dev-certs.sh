#!/usr/bin/env bash
# ============================================================================
#  DEVELOPMENT ONLY. NEVER USE THESE CERTIFICATES OR KEYS IN PRODUCTION.
# ============================================================================
# Makes a throwaway development CA and two server certificates for
# localhost / 127.0.0.1 / ::1 in this folder:
#
#   ca.pem, ca.key                      the development CA (10 years)
#   localhost-ecdsa.pem, .key           ECDSA P-256 server certificate (10 years)
#   localhost-rsa.pem, .key             RSA 2048 server certificate (10 years)
#
# Keys are written with mode 0600. Anyone who has ca.key can mint certificates
# your machine trusts if you ever import ca.pem into a trust store: don't.
#
# Idempotent: does nothing when the files are already there, unless --force.
#
# Usage: certs-dev/make-dev-certs.sh [--force]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
days=3650
force=0

for argument in "$@"; do
    case "$argument" in
        --force) force=1 ;;
        -h|--help)
            sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "make-dev-certs.sh: unknown argument '$argument' (usage: make-dev-certs.sh [--force])" >&2
            exit 2
            ;;
    esac
done

outputs=(ca.pem ca.key localhost-ecdsa.pem localhost-ecdsa.key localhost-rsa.pem localhost-rsa.key)

all_present=1
for file in "${outputs[@]}"; do
    [[ -s "$here/$file" ]] || all_present=0
done
if [[ $all_present -eq 1 && $force -eq 0 ]]; then
    echo "make-dev-certs.sh: development certificates already present in $here (use --force to remake them)"
    exit 0
fi

command -v openssl >/dev/null || { echo "make-dev-certs.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }

# Private keys must never be readable by others, not even for a moment.
umask 077
work="$(mktemp -d "${TMPDIR:-/tmp}/secproxy-dev-certs.XXXXXX")"
trap 'rm -rf "$work"' EXIT

cat > "$work/ca.ext" <<'CONF'
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CONF

cat > "$work/server.ext" <<'CONF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CONF

echo "make-dev-certs.sh: making a DEVELOPMENT ONLY CA and localhost certificates in $here"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/ca.key" 2>/dev/null
openssl req -new -key "$work/ca.key" -subj "/O=secproxy development/CN=secproxy DEVELOPMENT ONLY CA" -out "$work/ca.csr"
openssl x509 -req -in "$work/ca.csr" -signkey "$work/ca.key" -days "$days" -sha256 \
    -extfile "$work/ca.ext" -out "$work/ca.pem" 2>/dev/null

issue() {
    local name="$1"
    shift
    openssl genpkey "$@" -out "$work/$name.key" 2>/dev/null
    openssl req -new -key "$work/$name.key" -subj "/O=secproxy development/CN=localhost" -out "$work/$name.csr"
    openssl x509 -req -in "$work/$name.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
        -CAserial "$work/ca.srl" -days "$days" -sha256 -extfile "$work/server.ext" -out "$work/$name.pem" 2>/dev/null
    openssl verify -CAfile "$work/ca.pem" "$work/$name.pem" >/dev/null
}

issue localhost-ecdsa -algorithm EC -pkeyopt ec_paramgen_curve:P-256
issue localhost-rsa -algorithm RSA -pkeyopt rsa_keygen_bits:2048

for file in "${outputs[@]}"; do
    case "$file" in
        *.key) install -m 0600 "$work/$file" "$here/$file" ;;
        *) install -m 0644 "$work/$file" "$here/$file" ;;
    esac
done

echo "make-dev-certs.sh: wrote ${outputs[*]} (keys mode 0600) — DEVELOPMENT ONLY"
