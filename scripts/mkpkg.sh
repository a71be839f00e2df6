#!/bin/sh
# Build an OpenWrt package of phonebookd without the SDK, from the one
# source of truth both formats share: the files/ tree (paths and modes as
# git keeps them), the binary, and the maintainer scripts in packaging/.
#   ipk: opkg (AREDN up to 4.26.1, OpenWrt 23.05/24.10), laid out as
#        ipkg-build does: a gzipped tar of debian-binary, data.tar.gz and
#        control.tar.gz; /etc/config/phonebook is a conffile.
#   apk: apk-tools v3 (AREDN 4.26.7, OpenWrt 25.12), made by `apk mkpkg`
#        ($APK, default ../shared/tools/apk or apk on PATH); /etc is
#        protected by apk itself, so an edited config survives an upgrade.
# Usage: scripts/mkpkg.sh ipk|apk ARCH BINARY VERSION RELEASE OUTDIR
# (FILES= another files/ tree, for tests)
# Prints the package's path.
set -eu

format=$1 arch=$2 bin=$3 version=$4 release=$5 out=$6
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
name=phonebookd
description="AREDN phonebook daemon: SIP registrar/proxy, phone directory, and a software-health system reporting over ubus."

mkdir -p "$work/root/usr/bin" "$out"
cp -R "${FILES:-$top/files}/." "$work/root/"
cp "$bin" "$work/root/usr/bin/phonebookd"
chmod 0755 "$work/root/usr/bin/phonebookd"
# The modes git keeps, whatever the umask of the checkout.
find "$work/root" -type d -exec chmod 0755 {} +
find "$work/root" -type f ! -perm -u+x -exec chmod 0644 {} +
find "$work/root" -type f -perm -u+x -exec chmod 0755 {} +

case "$format" in
ipk)
	mkdir -p "$work/control"
	size=$(du -sk "$work/root" | cut -f1)
	cat > "$work/control/control" <<CONTROL
Package: $name
Version: $version-r$release
Depends: libc
Source: https://github.com/aredn/phonebookd
Section: net
Architecture: $arch
Installed-Size: $((size * 1024))
Require-User: phonebook:phonebook
Description: $description
CONTROL
	printf '/etc/config/phonebook\n' > "$work/control/conffiles"
	cp "$top/packaging/postinst" "$work/control/postinst"
	cp "$top/packaging/prerm" "$work/control/prerm"
	chmod 0755 "$work/control/postinst" "$work/control/prerm"
	tarball() { # DIR OUTPUT: reproducible, owned by root
		tar --format=gnu --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$1" -cf - . | gzip -n9 > "$2"
	}
	tarball "$work/control" "$work/control.tar.gz"
	tarball "$work/root" "$work/data.tar.gz"
	echo "2.0" > "$work/debian-binary"
	pkg="$out/${name}_${version}-r${release}_${arch}.ipk"
	tar --format=gnu --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$work" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz | gzip -n9 > "$pkg"
	;;
apk)
	apk=${APK:-}
	if [ -z "$apk" ]; then
		if [ -x "$top/../shared/tools/apk" ]; then apk=$top/../shared/tools/apk; else apk=apk; fi
	fi
	pkg="$out/${name}-${version}-r${release}.${arch}.apk"
	"$apk" mkpkg \
		--info "name:$name" --info "version:$version-r$release" --info "arch:$arch" \
		--info "description:$description" --info "license:GPL-2.0-only" \
		--info "url:https://github.com/aredn/phonebookd" --info "origin:$name" \
		--info "depends:libc" \
		--script "post-install:$top/packaging/postinst" \
		--script "post-upgrade:$top/packaging/postinst" \
		--script "pre-deinstall:$top/packaging/prerm" \
		--files "$work/root" --output "$pkg" >&2
	;;
*)
	echo "mkpkg: format must be ipk or apk" >&2
	exit 2
	;;
esac
echo "$pkg"
