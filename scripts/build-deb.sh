#!/usr/bin/env bash
# Builds .build/deb/secproxy_VERSION-REVISION_ARCH.deb with dpkg-deb (no debhelper, no source package) from the
# layout of scripts/install.sh with PREFIX=/usr, then runs lintian on it when lintian is installed.
#
#   swift build -c release --static-swift-stdlib --product secproxy
#   scripts/build-deb.sh                 # -> .build/deb/secproxy_0.1.0-1_amd64.deb
#
# The binary must be linked with --static-swift-stdlib: the package then needs only libc, libstdc++ and
# OpenSSL from Debian, not the Swift toolchain's /opt/swift/usr/lib/swift/linux/*.so.
# The package: /usr/bin/secproxy (stripped), the unit in /lib/systemd/system, sysusers.d/tmpfiles.d snippets,
# gzipped man pages, examples (socket unit, fd-store drop-in for systemd >= 254, the commented config) in
# /usr/share/doc/secproxy/examples, and /etc/secproxy/secproxy.toml as a conffile. The maintainer scripts
# (packaging/deb/) create the user, enable the unit without starting it, and restart it on upgrades.
#
# Environment: SECPROXY_BIN (default .build/release/secproxy), OUTDIR (default .build/deb), DEB_REVISION (1),
# DEB_MAINTAINER, LINTIAN=auto|yes|no (auto: run it when installed; yes: fail when it is missing),
# DEB_COMPRESSION (xz) and DEB_COMPRESSION_LEVEL (dpkg-deb's default, 6; the tests use 1: xz -6 of the
# 60 MiB binary takes 40-70 s on 2 busy cores, -1 about 10 s for a 15 % larger package).
# Prints the path of the .deb as its last line.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECPROXY_BIN="${SECPROXY_BIN:-.build/release/secproxy}"
OUTDIR="${OUTDIR:-.build/deb}"
DEB_REVISION="${DEB_REVISION:-1}"
DEB_MAINTAINER="${DEB_MAINTAINER:-secproxy maintainers <secproxy-maintainers@example.org>}"
DEB_HOMEPAGE="${DEB_HOMEPAGE:-https://example.org/secproxy}"
LINTIAN="${LINTIAN:-auto}"
DEB_COMPRESSION="${DEB_COMPRESSION:-xz}"
DEB_COMPRESSION_LEVEL="${DEB_COMPRESSION_LEVEL:-}"

fail() {
    echo "build-deb.sh: $*" >&2
    exit 1
}

for tool in dpkg-deb dpkg-shlibdeps strip gzip; do
    command -v "$tool" >/dev/null || fail "$tool is needed (apt-get install dpkg-dev binutils gzip)"
done
[[ -x "$SECPROXY_BIN" ]] || fail "no secproxy binary at '$SECPROXY_BIN'; build it first:
    swift build -c release --static-swift-stdlib --product secproxy"
if objdump -p "$SECPROXY_BIN" 2>/dev/null | grep -q 'NEEDED.*libswiftCore'; then
    fail "'$SECPROXY_BIN' links the Swift runtime dynamically (it would need /opt/swift on every machine);
build it with: swift build -c release --static-swift-stdlib --product secproxy"
fi

upstream_version="$("$SECPROXY_BIN" --version | awk '{ print $NF }')"
[[ "$upstream_version" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] ||
    fail "unexpected version '$upstream_version' from $SECPROXY_BIN --version"
version="$upstream_version-$DEB_REVISION"
arch="$(dpkg --print-architecture)"
# Reproducible: timestamps from the last commit (or now, outside git).
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

work="$(mktemp -d "${TMPDIR:-/tmp}/secproxy-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps wants a package build tree: debian/control, debian/<package>/DEBIAN.
stage="$work/debian/secproxy"
mkdir -p "$stage/DEBIAN"

scripts/install.sh DESTDIR="$stage" PREFIX=/usr FDSTORE_PRESERVE=no ACTIVATE=no SECPROXY_BIN="$SECPROXY_BIN" >/dev/null

# As dh_strip does for executables; the Swift metadata sections are allocated and stay.
strip --remove-section=.comment --remove-section=.note "$stage/usr/bin/secproxy"
"$stage/usr/bin/secproxy" --version >/dev/null || fail "the stripped binary does not run"

# Debian policy: man pages gzip -9n; docs: copyright, changelog.Debian.gz; the lintian overrides.
find "$stage/usr/share/man" -type f -exec gzip -9n {} +
doc="$stage/usr/share/doc/secproxy"
install -m 0644 packaging/deb/copyright "$doc/copyright"
{
    printf 'secproxy (%s) unstable; urgency=medium\n\n' "$version"
    printf '  * Built from secproxy %s (git %s) by scripts/build-deb.sh.\n\n' "$upstream_version" "$commit"
    printf ' -- %s  %s\n' "$DEB_MAINTAINER" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$doc/changelog.Debian.gz"
chmod 0644 "$doc/changelog.Debian.gz"
install -D -m 0644 packaging/deb/lintian-overrides "$stage/usr/share/lintian/overrides/secproxy"

# Control area.
for script in postinst prerm postrm; do
    install -m 0755 "packaging/deb/$script" "$stage/DEBIAN/$script"
done
install -m 0644 packaging/deb/conffiles "$stage/DEBIAN/conffiles"
printf 'Source: secproxy\n\nPackage: secproxy\nArchitecture: any\n' >"$work/debian/control"
# -e takes its file attached (-eFILE); "-e FILE" would also analyze an empty name, and warn about it.
shlibs="$(cd "$work" && dpkg-shlibdeps -O -edebian/secproxy/usr/bin/secproxy | sed -n 's/^shlibs:Depends=//p')"
[[ -n "$shlibs" ]] || fail "dpkg-shlibdeps found no dependencies for the binary"
installed_size="$(du -k -s --apparent-size --exclude=DEBIAN "$stage" | cut -f1)"
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@MAINTAINER@|$DEB_MAINTAINER|" \
    -e "s|@INSTALLED_SIZE@|$installed_size|" -e "s|@SHLIBS_DEPENDS@|$shlibs|" -e "s|@HOMEPAGE@|$DEB_HOMEPAGE|" \
    packaging/deb/control.in >"$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) \
    >"$stage/DEBIAN/md5sums"
# The conffile is not in md5sums (dpkg tracks it separately).
sed -i '\| etc/|d' "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums" "$stage/DEBIAN/control"

# Everything root-owned, directories 0755, timestamps clamped.
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
deb="$OUTDIR/secproxy_${version}_${arch}.deb"
compression=(-Z"$DEB_COMPRESSION")
if [[ -n "$DEB_COMPRESSION_LEVEL" ]]; then compression+=(-z"$DEB_COMPRESSION_LEVEL"); fi
dpkg-deb --root-owner-group "${compression[@]}" --build "$stage" "$deb" >/dev/null
echo "built $deb ($(du -h "$deb" | cut -f1))" >&2

case "$LINTIAN" in
    no) ;;
    auto | yes)
        if command -v lintian >/dev/null; then
            # Errors and warnings fail the build: each is fixed, or overridden with its reason in
            # packaging/deb/lintian-overrides.
            lintian --fail-on error,warning --display-info "$deb" >&2 || fail "lintian found errors or warnings in $deb"
        elif [[ "$LINTIAN" == yes ]]; then
            fail "lintian is not installed (apt-get install lintian)"
        else
            echo "lintian not installed: not checked" >&2
        fi
        ;;
    *) fail "LINTIAN must be auto, yes or no" ;;
esac
echo "$deb"
