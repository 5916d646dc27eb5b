#!/usr/bin/env bash
# Builds the vmsnap test and demo guest from Debian packages only:
#   vmlinuz      the linux-image-cloud-amd64 kernel
#   initrd.img   a tiny busybox initramfs that loads the virtio modules and switches to /dev/vda
#   rootfs.img   a raw, sparse, 1 GiB ext4 root disk (busybox, qemu-guest-agent, e2fsprogs)
#   manifest.json
# Usage: scripts/build-guest.sh [OUTDIR]   (default: ${VMSNAP_GUEST_DIR:-/var/cache/vmsnap/guest})
# Idempotent: the result is cached under a key made of the package versions and this script's hash.
# Boot with: -kernel vmlinuz -initrd initrd.img -append "console=ttyS0 root=/dev/vda rw quiet"
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUTDIR=${1:-${VMSNAP_GUEST_DIR:-/var/cache/vmsnap/guest}}
ROOTFS_SIZE=1G
READY_LINE=VMSNAP-GUEST-READY
# Modules the guest needs; their dependencies come from modules.dep. Built-in ones are skipped.
MODULES=(virtio_pci virtio_blk virtio_net virtio_console virtio_rng button evdev)
# Packages whose files go into the root filesystem, plus their library dependencies.
ROOT_PACKAGES=(busybox-static qemu-guest-agent e2fsprogs)

log() { echo "build-guest: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (mkfs.ext4 -d must record root ownership)"

bash "$SCRIPT_DIR/deps.sh"

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
# Several engineers and test runs may build at once: serialise on a lock in the output dir.
exec 9>"$OUTDIR/.lock"
flock 9

candidate() {
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'
}

# Candidates of many packages in one apt-cache call (each call costs about half a second).
candidates() {
  apt-cache policy "$@" 2>/dev/null | awk '/^[^ ].*:$/ {p = substr($1, 1, length($1) - 1)} /Candidate:/ {print p, $2}'
}

# Direct Depends/Pre-Depends (first alternative only) of PKG=VERSION arguments, as "PKG DEP" lines.
pkg_depends() {
  apt-cache show "$@" 2>/dev/null | awk '
    /^Package:/ { p = $2 }
    /^(Pre-)?Depends:/ {
      sub(/^[^:]*: */, "")
      n = split($0, parts, /, */)
      for (i = 1; i <= n; i++) { split(parts[i], alt, / *\| */); split(alt[1], w, /[ (:]/); print p, w[1] }
    }'
}

# Fast path: package versions can only change when the package lists change, so a stamp over the
# lists and this script skips the (slow) version resolution entirely.
script_hash=$(cat "${BASH_SOURCE[0]}" "$SCRIPT_DIR/deps.sh" | sha256sum | cut -d' ' -f1)
quick_key=$( (echo "$script_hash"; stat -c '%n %s %Y' /var/lib/apt/lists/*Packages* 2>/dev/null) | sha256sum | cut -d' ' -f1)
have_outputs() {
  [[ -f "$OUTDIR/vmlinuz" && -f "$OUTDIR/initrd.img" && -f "$OUTDIR/rootfs.img" && -f "$OUTDIR/manifest.json" ]]
}
if [[ -f "$OUTDIR/.stamp-quick" && "$(cat "$OUTDIR/.stamp-quick")" == "$quick_key" ]] && have_outputs; then
  log "up to date in $OUTDIR"
  exit 0
fi

# A fresh machine may have no package lists yet.
if [[ -z "$(candidate linux-image-cloud-amd64)" || "$(candidate linux-image-cloud-amd64)" == "(none)" ]]; then
  log "refreshing package lists"
  apt-get update -qq
fi

# Resolve the meta package to the versioned kernel image package.
meta_ver=$(candidate linux-image-cloud-amd64)
[[ -n "$meta_ver" && "$meta_ver" != "(none)" ]] || die "package linux-image-cloud-amd64 not found"
kernel_pkg=$(pkg_depends "linux-image-cloud-amd64=$meta_ver" | awk '{print $2}' | grep -E '^linux-image-.*-cloud-amd64$' | head -n1)
[[ -n "$kernel_pkg" ]] || die "cannot resolve linux-image-cloud-amd64 $meta_ver to a kernel package"
kernel_ver=$(candidate "$kernel_pkg")
kernel_release=${kernel_pkg#linux-image-}

# Closure of the root packages and the libraries they need; non-library dependencies (such as
# logsave or the gcc base docs) are not needed in the guest.
declare -A want=()
level=("${ROOT_PACKAGES[@]}")
while ((${#level[@]})); do
  specs=()
  while read -r p v; do
    [[ -n "$v" && "$v" != "(none)" ]] || die "package $p not found"
    want[$p]=$v
    specs+=("$p=$v")
  done < <(candidates "${level[@]}")
  for p in "${level[@]}"; do [[ -n "${want[$p]:-}" ]] || die "package $p not found"; done
  declare -A next=()
  while read -r _ d; do
    case "$d" in
      lib*|zlib1g) [[ -n "${want[$d]:-}" ]] || next[$d]=1 ;;
    esac
  done < <(pkg_depends "${specs[@]}")
  level=("${!next[@]}")
  unset next
done

pkglist=$( (echo "$kernel_pkg=$kernel_ver"; for p in "${!want[@]}"; do echo "$p=${want[$p]}"; done) | sort)
key=$(printf '%s\n%s\n%s\n' "$pkglist" "$script_hash" "$ROOTFS_SIZE" | sha256sum | cut -d' ' -f1)

if [[ -f "$OUTDIR/.stamp" && "$(cat "$OUTDIR/.stamp")" == "$key" ]] && have_outputs; then
  echo "$quick_key" >"$OUTDIR/.stamp-quick"
  log "up to date in $OUTDIR"
  exit 0
fi

log "building guest ($kernel_pkg $kernel_ver) in $OUTDIR"
WORK=$(mktemp -d "$OUTDIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
DEBS=$WORK/debs
KX=$WORK/kernel
ROOT=$WORK/root
INITRD=$WORK/initrd
mkdir -p "$DEBS" "$KX" "$ROOT" "$INITRD"
chmod 755 "$DEBS"

# apt-get download writes into the current directory; as root it warns about the sandbox user.
(cd "$DEBS" && apt-get download -q "$kernel_pkg=$kernel_ver" $(for p in "${!want[@]}"; do echo "$p=${want[$p]}"; done) 2>&1 |
  grep -v -e 'unsandboxed as root' -e '^Get:' -e '^Fetched' >&2 || true)
for p in "$kernel_pkg" "${!want[@]}"; do
  compgen -G "$DEBS/${p}_*.deb" >/dev/null || die "download of $p failed"
done

# --- kernel and modules -------------------------------------------------------------------------
dpkg-deb -x "$DEBS/${kernel_pkg}"_*.deb "$KX"
MODDIR=$KX/lib/modules/$kernel_release
[[ -d "$MODDIR" ]] || die "kernel package has no modules for $kernel_release"
# Debian generates modules.dep at install time; we never install the kernel, so run depmod here.
depmod -b "$KX" "$kernel_release"
cp "$KX/boot/vmlinuz-$kernel_release" "$WORK/vmlinuz"

# Topological order: dependencies first (modules.dep lists each module's dependencies).
declare -A mod_path=() mod_done=()
while IFS=: read -r path _; do
  name=$(basename "$path" .ko)
  mod_path[${name//-/_}]=$path
done <"$MODDIR/modules.dep"
order=()
visit() {
  local m=${1//-/_} deps d
  [[ -n "${mod_done[$m]:-}" ]] && return 0
  mod_done[$m]=1
  if [[ -z "${mod_path[$m]:-}" ]]; then
    if grep -qE "/${1}\.ko$|/${m}\.ko$" "$MODDIR/modules.builtin"; then return 0; fi
    die "kernel module $1 is neither a module nor built in"
  fi
  deps=$(awk -F': *' -v p="${mod_path[$m]}" '$1 == p { print $2 }' "$MODDIR/modules.dep")
  for d in $deps; do visit "$(basename "$d" .ko)"; done
  order+=("${mod_path[$m]}")
}
for m in "${MODULES[@]}"; do visit "$m"; done

# --- initramfs ----------------------------------------------------------------------------------
dpkg-deb -x "$DEBS"/busybox-static_*.deb "$WORK/bb"
BUSYBOX=$WORK/bb/bin/busybox
[[ -x "$BUSYBOX" ]] || die "busybox-static has no /bin/busybox"
mkdir -p "$INITRD"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$BUSYBOX" "$INITRD/bin/busybox"
: >"$INITRD/modules.list"
for p in "${order[@]}"; do
  cp "$MODDIR/$p" "$INITRD/lib/modules/"
  basename "$p" >>"$INITRD/modules.list"
done
cat >"$INITRD/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# modules.list is already in dependency order; retry a few passes anyway so that one
# unexpected ordering problem does not leave the guest without its disk.
pending=$(cat /modules.list)
for pass in 1 2 3; do
  left=
  for m in $pending; do
    insmod "/lib/modules/$m" 2>/dev/null || left="$left $m"
  done
  pending=$left
  [ -z "$pending" ] && break
done
[ -n "$pending" ] && echo "initrd: modules not loaded:$pending"

root=/dev/vda
rootfstype=ext4
flags=rw
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root=${arg#root=} ;;
    rootfstype=*) rootfstype=${arg#rootfstype=} ;;
    ro) flags=ro ;;
  esac
done
i=0
while [ ! -b "$root" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t "$rootfstype" -o "$flags" "$root" /newroot; then
  echo "initrd: cannot mount $root; dropping to a shell"
  exec sh
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
INIT
chmod 755 "$INITRD/init"
(cd "$INITRD" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >"$WORK/initrd.img"

# --- root filesystem ----------------------------------------------------------------------------
for p in "${!want[@]}"; do
  dpkg-deb -x "$DEBS/${p}"_*.deb "$ROOT"
done
rm -rf "$ROOT"/usr/share/{doc,man,info,locale,lintian,bug,bash-completion}
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,data,root,etc/init.d,etc/acpi/PWRF,var/lib,var/log,usr/share/udhcpc}
chmod 1777 "$ROOT/tmp"
ln -sfn /run "$ROOT/var/run"
# Busybox applets fill only the gaps: e2fsprogs' own tools stay.
for applet in $("$ROOT/bin/busybox" --list-full); do
  [[ -e "$ROOT/$applet" || -L "$ROOT/$applet" ]] || ln -s /bin/busybox "$ROOT/$applet"
done
[[ -x "$ROOT/usr/sbin/qemu-ga" ]] || die "qemu-guest-agent has no /usr/sbin/qemu-ga"

# The agent must run from the guest's own libraries: check with the guest's loader.
if ! chroot "$ROOT" /usr/sbin/qemu-ga --version >/dev/null 2>&1; then
  # Fall back to the host's copy of any library the packages did not bring.
  for bin in /usr/sbin/qemu-ga /sbin/e2fsck /sbin/mke2fs; do
    for lib in $(LD_LIBRARY_PATH="$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu" ldd "$ROOT$bin" | awk '/=> \// {print $3}'); do
      [[ -e "$ROOT$lib" ]] || { mkdir -p "$ROOT$(dirname "$lib")"; cp -L "$lib" "$ROOT$lib"; }
    done
  done
  chroot "$ROOT" /usr/sbin/qemu-ga --version >/dev/null || die "qemu-ga does not run inside the root filesystem"
fi
chroot "$ROOT" /sbin/e2fsck -V >/dev/null 2>&1 || die "e2fsck does not run inside the root filesystem"

cat >"$ROOT/etc/inittab" <<'EOF'
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run
::respawn:/sbin/acpid -f -c /etc/acpi
::ctrlaltdel:/sbin/poweroff
::shutdown:/etc/init.d/rcK
EOF

cat >"$ROOT/etc/init.d/rcS" <<EOF
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
[ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /run is a tmpfs: qemu-ga keeps its "frozen" state file there, and a snapshot of the root disk
# must never carry that file into a restored guest.
mount -t tmpfs -o mode=755 tmpfs /run
mount -o remount,rw / 2>/dev/null
hostname vmsnap-guest

# No udev: name the virtio serial ports the way udev rules would.
mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/*; do
  [ -r "\$p/name" ] || continue
  name=\$(cat "\$p/name")
  [ -n "\$name" ] && ln -sf "../\$(basename "\$p")" "/dev/virtio-ports/\$name"
done

# Busybox's shell prefers its own applets over binaries in PATH: e2fsprogs tools go by full path.
if [ -b /dev/vdb ]; then
  # Blank means the first MiB is all zeros (every filesystem has its superblock there).
  if [ -z "\$(dd if=/dev/vdb bs=64k count=16 2>/dev/null | tr -d '\\000' | head -c 1)" ]; then
    echo "vmsnap-guest: formatting blank /dev/vdb as ext4"
    /sbin/mke2fs -q -t ext4 -F /dev/vdb
  elif /sbin/dumpe2fs -h /dev/vdb >/dev/null 2>&1; then
    /sbin/e2fsck -p /dev/vdb >/dev/null 2>&1
  fi
  mount /dev/vdb /data || echo "vmsnap-guest: cannot mount /dev/vdb"
fi

ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  udhcpc -i eth0 -b -q -t 5 -s /usr/share/udhcpc/default.script >/dev/null 2>&1 &
fi
echo "$READY_LINE" >/dev/ttyS0
EOF

cat >"$ROOT/etc/init.d/rcK" <<'EOF'
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
killall qemu-ga acpid udhcpc 2>/dev/null
sync
umount /data 2>/dev/null
mount -o remount,ro / 2>/dev/null
sync
EOF

# busybox acpid runs ./PWRF/00000080 (relative to -c) when the ACPI power button is pressed.
cat >"$ROOT/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
/sbin/poweroff
EOF

cat >"$ROOT/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : >/run/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/run/resolv.conf; done
    ;;
  deconfig) ip addr flush dev "$interface" ;;
esac
EOF
ln -sfn /run/resolv.conf "$ROOT/etc/resolv.conf"
chmod 755 "$ROOT/etc/init.d/rcS" "$ROOT/etc/init.d/rcK" "$ROOT/etc/acpi/PWRF/00000080" "$ROOT/usr/share/udhcpc/default.script"
ln -sfn /bin/busybox "$ROOT/sbin/init"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\n' >"$ROOT/etc/group"
echo vmsnap-guest >"$ROOT/etc/hostname"
cat >"$ROOT/etc/fstab" <<'EOF'
/dev/vda / ext4 rw 0 1
EOF
printf '%s\n' "$pkglist" >"$ROOT/etc/vmsnap-guest-packages"

truncate -s "$ROOTFS_SIZE" "$WORK/rootfs.img"
mkfs.ext4 -q -F -L vmsnap-root -E root_owner=0:0 -d "$ROOT" "$WORK/rootfs.img"

# --- manifest and publish -----------------------------------------------------------------------
{
  printf '{\n'
  printf '  "kernel_package": "%s",\n' "$kernel_pkg"
  printf '  "kernel_package_version": "%s",\n' "$kernel_ver"
  printf '  "kernel_version": "%s",\n' "$kernel_release"
  printf '  "kernel": "vmlinuz",\n  "initrd": "initrd.img",\n  "rootfs": "rootfs.img",\n'
  printf '  "rootfs_format": "raw",\n  "rootfs_fstype": "ext4",\n'
  printf '  "cmdline": "console=ttyS0 root=/dev/vda rw quiet",\n'
  printf '  "ready_line": "%s",\n' "$READY_LINE"
  printf '  "agent_port": "org.qemu.guest_agent.0",\n'
  printf '  "modules": [%s],\n' "$(printf '"%s",' "${order[@]##*/}" | sed 's/,$//')"
  printf '  "packages": [%s],\n' "$(printf '%s\n' "$pkglist" | sed 's/.*/"&"/' | paste -sd, -)"
  printf '  "key": "%s"\n' "$key"
  printf '}\n'
} >"$WORK/manifest.json"

rm -f "$OUTDIR/.stamp" "$OUTDIR/.stamp-quick"
for f in vmlinuz initrd.img rootfs.img manifest.json; do
  mv -f "$WORK/$f" "$OUTDIR/$f"
done
echo "$key" >"$OUTDIR/.stamp"
echo "$quick_key" >"$OUTDIR/.stamp-quick"
log "done: $OUTDIR (kernel $kernel_release)"
