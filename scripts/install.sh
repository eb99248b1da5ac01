#!/usr/bin/env bash
# Installs secproxy like a system daemon: the binary, the systemd unit (ExecStart= pointing at this PREFIX),
# the sysusers.d/tmpfiles.d snippets for the `secproxy` user and /etc/secproxy, the man pages, the examples
# (socket activation unit, fd-store drop-in for systemd >= 254, commented config) and, when none exists yet,
# /etc/secproxy/secproxy.toml. An existing configuration is never overwritten.
#
#   swift build -c release --static-swift-stdlib --product secproxy
#   sudo scripts/install.sh                      # PREFIX=/usr/local
#   scripts/install.sh DESTDIR=/tmp/stage PREFIX=/usr   # staging (what scripts/build-deb.sh does)
#
# Settings, as environment variables or NAME=VALUE arguments:
#   PREFIX       /usr/local; binary in PREFIX/bin, man pages in PREFIX/share/man, examples in
#                PREFIX/share/doc/secproxy/examples
#   DESTDIR      empty; a staging root prepended to every path (paths inside files do not get it)
#   UNITDIR      PREFIX/lib/systemd/system; for PREFIX=/usr systemd's own unit folder (pkg-config
#                systemd, /lib/systemd/system on Debian 12). systemd reads /usr/local/lib/systemd/system too.
#   SYSUSERSDIR, TMPFILESDIR   PREFIX/lib/sysusers.d, PREFIX/lib/tmpfiles.d (both read by systemd)
#   SECPROXY_BIN the binary to install; default .build/release/secproxy
#   FDSTORE_PRESERVE  yes | no | auto (default): install secproxy.service.d/fdstore-preserve.conf next to the
#                unit; auto = only when installing onto this machine (no DESTDIR) and its systemd is >= 254
#   ACTIVATE     auto (default) | no: with no DESTDIR, as root, on a machine running systemd, create the user
#                (systemd-sysusers), /etc/secproxy (systemd-tmpfiles) and reload systemd. Nothing is enabled
#                or started: edit the configuration first, then `systemctl enable --now secproxy`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

for argument in "$@"; do
    case "$argument" in
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        PREFIX=* | DESTDIR=* | UNITDIR=* | SYSUSERSDIR=* | TMPFILESDIR=* | SECPROXY_BIN=* | FDSTORE_PRESERVE=* | \
            ACTIVATE=*)
            export "${argument?}"
            ;;
        *)
            echo "install.sh: unknown argument '$argument' (see --help)" >&2
            exit 2
            ;;
    esac
done

PREFIX="${PREFIX:-/usr/local}"
PREFIX="${PREFIX%/}"
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
if [[ "$PREFIX" != /* ]]; then
    echo "install.sh: PREFIX must be an absolute path, not '$PREFIX'" >&2
    exit 2
fi
if [[ -z "${UNITDIR:-}" ]]; then
    if [[ "$PREFIX" == /usr ]]; then
        UNITDIR="$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null || true)"
        UNITDIR="${UNITDIR:-/usr/lib/systemd/system}"
    else
        UNITDIR="$PREFIX/lib/systemd/system"
    fi
fi
SYSUSERSDIR="${SYSUSERSDIR:-$PREFIX/lib/sysusers.d}"
TMPFILESDIR="${TMPFILESDIR:-$PREFIX/lib/tmpfiles.d}"
BINDIR="$PREFIX/bin"
MANDIR="$PREFIX/share/man"
EXAMPLESDIR="$PREFIX/share/doc/secproxy/examples"
CONFDIR=/etc/secproxy
SECPROXY_BIN="${SECPROXY_BIN:-.build/release/secproxy}"
FDSTORE_PRESERVE="${FDSTORE_PRESERVE:-auto}"
ACTIVATE="${ACTIVATE:-auto}"

if [[ ! -x "$SECPROXY_BIN" ]]; then
    echo "install.sh: no secproxy binary at '$SECPROXY_BIN'; build it first:" >&2
    echo "    swift build -c release --static-swift-stdlib --product secproxy" >&2
    echo "(or name another one with SECPROXY_BIN=PATH)" >&2
    exit 1
fi

say() { printf '  %s\n' "$*"; }
# install_file MODE SOURCE TARGET (TARGET without DESTDIR)
install_file() {
    install -D -m "$1" "$2" "$DESTDIR$3"
    say "$3"
}

echo "installing secproxy into ${DESTDIR:+$DESTDIR (staging) with }PREFIX=$PREFIX"
install_file 0755 "$SECPROXY_BIN" "$BINDIR/secproxy"

# The unit names the binary by its absolute path: this PREFIX's, not the /usr/local/bin of the source file.
unit_text="$(sed "s|/usr/local/bin/secproxy|$BINDIR/secproxy|g" systemd/secproxy.service)"
install -d -m 0755 "$DESTDIR$UNITDIR"
printf '%s\n' "$unit_text" >"$DESTDIR$UNITDIR/secproxy.service"
chmod 0644 "$DESTDIR$UNITDIR/secproxy.service"
say "$UNITDIR/secproxy.service"

systemd_version() {
    systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 + 0 }'
}
preserve="$FDSTORE_PRESERVE"
if [[ "$preserve" == auto ]]; then
    preserve=no
    if [[ -z "$DESTDIR" && -d /run/systemd/system ]] && (( $(systemd_version || echo 0) >= 254 )); then
        preserve=yes
    fi
fi
if [[ "$preserve" == yes ]]; then
    install_file 0644 systemd/systemd-254/secproxy.service.d/fdstore-preserve.conf \
        "$UNITDIR/secproxy.service.d/fdstore-preserve.conf"
fi

install_file 0644 systemd/sysusers.d/secproxy.conf "$SYSUSERSDIR/secproxy.conf"
install_file 0644 systemd/tmpfiles.d/secproxy.conf "$TMPFILESDIR/secproxy.conf"
install_file 0644 man/secproxy.8 "$MANDIR/man8/secproxy.8"
install_file 0644 man/secproxy.toml.5 "$MANDIR/man5/secproxy.toml.5"
install_file 0644 systemd/secproxy.socket "$EXAMPLESDIR/secproxy.socket"
install_file 0644 systemd/systemd-254/secproxy.service.d/fdstore-preserve.conf "$EXAMPLESDIR/fdstore-preserve.conf"
install_file 0644 config/secproxy.toml "$EXAMPLESDIR/secproxy.toml"

# The configuration: installed once, then it is the operator's.
install -d -m 0755 "$DESTDIR$CONFDIR"
if [[ -e "$DESTDIR$CONFDIR/secproxy.toml" ]]; then
    say "$CONFDIR/secproxy.toml exists: kept as it is (the example is in $EXAMPLESDIR/secproxy.toml)"
else
    install -m 0644 config/secproxy.toml "$DESTDIR$CONFDIR/secproxy.toml"
    say "$CONFDIR/secproxy.toml (the example: edit it before starting the service)"
fi

if [[ -n "$DESTDIR" || "$ACTIVATE" == no ]]; then
    exit 0
fi
if [[ $(id -u) -ne 0 || ! -d /run/systemd/system ]]; then
    echo "not root or systemd not running: create the user and /etc/secproxy yourself:"
    echo "    systemd-sysusers $SYSUSERSDIR/secproxy.conf && systemd-tmpfiles --create $TMPFILESDIR/secproxy.conf"
    exit 0
fi
systemd-sysusers "$SYSUSERSDIR/secproxy.conf"
systemd-tmpfiles --create "$TMPFILESDIR/secproxy.conf"
systemctl daemon-reload
cat <<EOF
done. Next:
    edit $CONFDIR/secproxy.toml (certificates and keys under $CONFDIR/certs/, keys owned by secproxy, mode 0600)
    secproxy --check-config
    systemctl enable --now secproxy
A running secproxy keeps the old binary until 'systemctl restart secproxy' (its listening sockets are kept
across the restart: no connection is refused).
EOF
