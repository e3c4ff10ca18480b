#!/usr/bin/env bash
# Builds the Debian package of xdp-ecmp (dpkg-deb on a staged tree) from the workspace's own metadata: the binary, systemd unit, sysusers entry, example config as a conffile, state directory, completions, man pages, changelog, copyright and maintainer scripts.
#
# scripts/package.sh [--binary PATH] [--revision N] [--out DIR]
#   --binary PATH  package this release binary (default: cargo build --release -p xdp-ecmp)
#   --revision N   the Debian revision, the N of VERSION-N (default 1)
#   --out DIR      where the .deb goes (default: TARGET_DIR/debian)
# The maintainer is $DEBFULLNAME <$DEBEMAIL>, else git's user.name <user.email>.
# Prints the path of the package on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022

die() { echo "package: $*" >&2; exit 1; }

binary='' revision=1 out=''
while (($#)); do
    case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --revision) revision=${2:?--revision needs a number}; shift 2 ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done
[[ $revision =~ ^[0-9][0-9a-z.+~]*$ ]] || die "--revision $revision: give a Debian revision such as 1 or 2"
for tool in dpkg-deb dpkg gzip strip python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs what the build needs; dpkg-deb comes with dpkg)"
done

# The package's name, version, description and license, as Cargo has them,
# and where cargo builds (CARGO_TARGET_DIR when set).
meta=$(cargo metadata --format-version 1 --no-deps --offline 2>/dev/null || cargo metadata --format-version 1 --no-deps)
read_meta() {
    python3 -c '
import json, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "xdp-ecmp")
print(m["target_directory"]); print(p["version"]); print(p["description"]); print(p["license"])
' <<<"$meta"
}
{ read -r target_dir; read -r version; read -r summary; read -r license; } < <(read_meta)
[[ -n $version ]] || die "no version of package xdp-ecmp in Cargo's metadata"
arch=$(dpkg --print-architecture)
debversion="$version-$revision"
out=${out:-$target_dir/debian}

if [[ -z $binary ]]; then
    cargo build --release -p xdp-ecmp
    binary=$target_dir/release/xdp-ecmp
fi
[[ -x $binary ]] || die "$binary is not an executable (build it: cargo build --release -p xdp-ecmp, or give --binary PATH)"
# The binary must be this workspace's version, and says which commit it is.
short=$("$binary" -V) || die "$binary -V failed"
[[ $short == "xdp-ecmp $version "* ]] || die "$binary is \"$short\", not version $version of Cargo.toml: rebuild it (cargo build --release -p xdp-ecmp)"
commit=${short#*(}
commit=${commit%)}

maintainer() {
    local name=${DEBFULLNAME:-} mail=${DEBEMAIL:-}
    [[ -n $name ]] || name=$(git config user.name 2>/dev/null || true)
    [[ -n $mail ]] || mail=$(git config user.email 2>/dev/null || true)
    [[ -n $name && -n $mail ]] || die "no maintainer: set DEBFULLNAME and DEBEMAIL (or git's user.name and user.email)"
    echo "$name <$mail>"
}
maint=$(maintainer)

name=xdp-ecmp_${debversion}_$arch
stage=$out/$name
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
inst() { # inst MODE SOURCE DEST (DEST relative to the package root)
    install -D -m "$1" "$2" "$stage/$3"
}

# The binary, without its debug information (the release profile keeps it).
inst 755 "$binary" usr/bin/xdp-ecmp
strip --strip-unneeded "$stage/usr/bin/xdp-ecmp"

# The unit names the binary where a hand install puts it (/usr/local/bin);
# the package puts it in /usr/bin.
unit=$stage/lib/systemd/system/xdp-ecmp.service
install -D -m 644 /dev/null "$unit"
sed 's|/usr/local/bin/xdp-ecmp|/usr/bin/xdp-ecmp|g' control/dist/xdp-ecmp.service > "$unit"
grep -q '^ExecStart=/usr/bin/xdp-ecmp ' "$unit" || die "control/dist/xdp-ecmp.service: its ExecStart no longer names /usr/local/bin/xdp-ecmp; update the rewrite here"
inst 644 control/dist/xdp-ecmp.sysusers usr/lib/sysusers.d/xdp-ecmp.conf
inst 644 control/dist/xdp-ecmp.toml etc/xdp-ecmp/xdp-ecmp.toml
echo /etc/xdp-ecmp/xdp-ecmp.toml > "$stage/DEBIAN/conffiles"
# The state directory (the kept hash seed); systemd hands it to the
# daemon's user at start (StateDirectory=).
install -d -m 750 "$stage/var/lib/xdp-ecmp"

# Completions and man pages, written by the binary from its CLI definition.
"$binary" completions bash | inst 644 /dev/stdin usr/share/bash-completion/completions/xdp-ecmp
"$binary" completions zsh | inst 644 /dev/stdin usr/share/zsh/vendor-completions/_xdp-ecmp
"$binary" completions fish | inst 644 /dev/stdin usr/share/fish/vendor_completions.d/xdp-ecmp.fish
man=$stage/usr/share/man/man1
mkdir -p "$man"
"$binary" man-pages "$man" >/dev/null
gzip -9n "$man"/*.1

doc=$stage/usr/share/doc/xdp-ecmp
inst 644 README.md usr/share/doc/xdp-ecmp/README.md
inst 644 docs/operations.md usr/share/doc/xdp-ecmp/operations.md
inst 644 control/dist/xdp-ecmp-afxdp.conf usr/share/doc/xdp-ecmp/examples/xdp-ecmp-afxdp.conf

# The changelog: this build, dated by the commit (SOURCE_DATE_EPOCH wins).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
{
    echo "xdp-ecmp ($debversion) unstable; urgency=medium"
    echo
    echo "  * xdp-ecmp $version built from commit $commit of its workspace."
    echo
    echo " -- $maint  $(LC_ALL=C date -u -R -d "@$epoch")"
} | gzip -9n > "$doc/changelog.Debian.gz"

# What the binary links statically: every crate of its normal dependency
# tree on this platform (proc-macros and what only they use run at build
# time), with the license its metadata declares.
crates=$(cargo metadata --format-version 1 --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
pk = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
root = next(i for i, p in pk.items() if p["name"] == "xdp-ecmp" and p["source"] is None)
seen, todo = set(), [root]
while todo:
    i = todo.pop()
    if i in seen:
        continue
    seen.add(i)
    if any("proc-macro" in t["kind"] for t in pk[i]["targets"]):
        continue
    for d in nodes[i]["deps"]:
        if any(k["kind"] is None for k in d["dep_kinds"]):
            todo.append(d["pkg"])
linked = [i for i in seen - {root} if not any("proc-macro" in t["kind"] for t in pk[i]["targets"])]
for i in sorted(linked, key=lambda i: (pk[i]["name"], pk[i]["version"])):
    p = pk[i]
    print(" %s %s: %s" % (p["name"], p["version"], p["license"] or "see the crate"))
')
[[ -n $crates ]] || die "cargo metadata listed no dependencies of xdp-ecmp"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: xdp-ecmp
Comment: The binary links these Rust crates statically, each under the
 license its Cargo metadata declares (libbpf-sys carries libbpf, LGPL-2.1 OR
 BSD-2-Clause, built from source):
$crates

Files: *
Copyright: the xdp-ecmp authors
License: $license

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 SOFTWARE.

License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

for s in postinst prerm postrm; do
    install -m 755 "control/dist/deb/$s" "$stage/DEBIAN/$s"
done

# Depends: the shared libraries the binary needs (libc, libelf, zlib, ...).
depends() {
    if command -v dpkg-shlibdeps >/dev/null; then
        local t
        t=$(mktemp -d)
        mkdir "$t/debian"
        printf 'Source: xdp-ecmp\n\nPackage: xdp-ecmp\nArchitecture: any\n' > "$t/debian/control"
        (cd "$t" && dpkg-shlibdeps -O --warnings=0 -e"$stage/usr/bin/xdp-ecmp") | sed -n 's/^shlibs:Depends=//p'
        rm -rf "$t"
    else
        # Without dpkg-dev: the package of each library ldd resolves, unversioned.
        echo "package: dpkg-shlibdeps not found (package dpkg-dev): Depends from ldd, without versions" >&2
        ldd "$stage/usr/bin/xdp-ecmp" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
            dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib"
        done | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g'
    fi
}
deps=$(depends)
[[ -n $deps ]] || die "no Depends could be computed for $stage/usr/bin/xdp-ecmp"

size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<EOF
Package: xdp-ecmp
Version: $debversion
Architecture: $arch
Maintainer: $maint
Installed-Size: $size
Depends: $deps
Suggests: frr
Section: net
Priority: optional
Description: $summary
 xdp-ecmp spreads the flows of multipath routes over their next hops in
 XDP (or an AF_XDP engine), with resilient bucket tables: a failing next hop
 moves only its own flows. Its daemon mirrors the kernel's routes, nexthop
 objects and neighbours, whatever wrote them (ip, FRR), and hands the kernel
 every packet the kernel has to decide. Restarts and upgrades move no flow.
 .
 This package holds the daemon and CLI (xdp-ecmp), its systemd unit (not
 enabled until the configuration names the ports), an example configuration,
 shell completions and man pages. Start with: xdp-ecmp doctor.
EOF

mkdir -p "$out"
deb=$out/$name.deb
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
dpkg-deb --info "$deb" >/dev/null || die "dpkg-deb --info refuses $deb"
if command -v lintian >/dev/null; then
    lintian "$deb" || die "lintian found errors in $deb"
else
    echo "package: lintian not installed: not run" >&2
fi
rm -rf "$stage"
echo "$deb"
