#!/bin/sh
# Assemble an OpenWrt .ipk (opkg, AREDN up to 4.26.1) from a cross-built
# binary and files/, without the SDK, the way ipkg-build lays it out:
# a gzipped tar of debian-binary, data.tar.gz and control.tar.gz.
# Usage: scripts/mkipk.sh ARCH BINARY VERSION OUTDIR
set -eu

arch=$1 bin=$2 version=$3 out=$4
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/data/usr/bin" "$work/control" "$out"
cp -R "$top/files/." "$work/data/"
cp "$bin" "$work/data/usr/bin/phonebookd"
chmod 0755 "$work/data/usr/bin/phonebookd" "$work/data/etc/init.d/phonebook" \
	"$work/data/www/cgi-bin/healthcheck" "$work/data/www/cgi-bin/showphonebook" \
	"$work/data/www/cgi-bin/apps/phonebook/user"

size=$(du -sk "$work/data" | cut -f1)
cat > "$work/control/control" <<CONTROL
Package: phonebookd
Version: $version
Depends: libc
Source: https://github.com/aredn/phonebookd
Section: net
Architecture: $arch
Installed-Size: $((size * 1024))
Description: AREDN phonebook daemon: SIP registrar/proxy, phone directory,
 and a software-health system reporting over ubus.
CONTROL
printf '/etc/config/phonebook\n' > "$work/control/conffiles"
cat > "$work/control/postinst" <<'SCRIPT'
#!/bin/sh
[ -n "${IPKG_INSTROOT:-}" ] && exit 0
/etc/init.d/phonebook enable
/etc/init.d/phonebook restart
exit 0
SCRIPT
cat > "$work/control/prerm" <<'SCRIPT'
#!/bin/sh
[ -n "${IPKG_INSTROOT:-}" ] && exit 0
/etc/init.d/phonebook stop
/etc/init.d/phonebook disable
exit 0
SCRIPT
chmod 0755 "$work/control/postinst" "$work/control/prerm"

tarball() { # DIR OUTPUT: reproducible, owned by root
	tar --numeric-owner --owner=0 --group=0 --sort=name --mtime=@0 -C "$1" -cf - . | gzip -n9 > "$2"
}
tarball "$work/control" "$work/control.tar.gz"
tarball "$work/data" "$work/data.tar.gz"
echo "2.0" > "$work/debian-binary"
ipk="$out/phonebookd_${version}_${arch}.ipk"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 -C "$work" -cf - ./debian-binary ./data.tar.gz ./control.tar.gz | gzip -n9 > "$ipk"
echo "$ipk"
