#!/usr/bin/env bash
# A Raspberry Pi userland (Debian bookworm arm64) in a folder, run under qemu-user through
# binfmt_misc. Driven by tools/rpi/rpi_check.py (`make rpi-check`); usable by hand:
#
#   rootfs.sh host-setup                          apt-get the tools, mount and enable binfmt_misc
#   rootfs.sh build DIR REQUIREMENTS MIRROR CPUINFO
#                                                 debootstrap DIR (if DIR/.complete is absent) and
#                                                 pip install REQUIREMENTS into /opt/edge-lls/venv
#   rootfs.sh mount DIR CPUINFO                   /proc (CPUINFO over /proc/cpuinfo), /sys, /dev,
#                                                 the host's resolv.conf and CA bundle
#   rootfs.sh umount DIR                          every mount under DIR, innermost first
#
# Needs root (debootstrap, chroot, mount). Every step is idempotent; a build that fails
# leaves DIR.partial, which the next build removes and starts again.
set -euo pipefail

SUITE=bookworm
ARCH=arm64
PACKAGES=python3,python3-venv,ca-certificates      # bookworm's python3 is 3.11
APT_PACKAGES=(debootstrap qemu-user-static binfmt-support)
VENV=/opt/edge-lls/venv
GUEST_CA=/usr/local/share/edge-lls/host-ca.crt    # the host's CA bundle, for pip (PIP_CERT)
BINFMT=/proc/sys/fs/binfmt_misc

die() { echo "rootfs.sh: error: $*" >&2; exit 1; }
say() { echo "rootfs.sh: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mount): run it with sudo"; }

host_ca() {
    local f
    for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}" /etc/ssl/certs/ca-certificates.crt; do
        if [ -n "$f" ] && [ -f "$f" ]; then echo "$f"; return; fi
    done
    die "no CA bundle on the host (PIP_CERT, SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt)"
}

host_setup() {
    need_root
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
    if [ ! -e "$BINFMT/register" ]; then
        say "mounting binfmt_misc on $BINFMT"
        mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc on $BINFMT"
    fi
    [ "$(cat "$BINFMT/status")" = enabled ] || echo 1 > "$BINFMT/status"
    if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null; then
        say "enabling qemu-aarch64 in binfmt_misc"
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || update-binfmts --import qemu-aarch64 >/dev/null 2>&1 \
            || die "update-binfmts could not enable qemu-aarch64"
    fi
    grep -qx enabled "$BINFMT/qemu-aarch64" || die "qemu-aarch64 is not enabled in $BINFMT"
    # F (fix binary): the kernel opens qemu at registration, so a chroot needs no copy of it.
    grep -q '^flags: .*F' "$BINFMT/qemu-aarch64" \
        || die "qemu-aarch64 is registered without the F flag: a chroot would not find its interpreter"
}

mounted() { mountpoint -q "$1"; }

do_mount() {    # DIR CPUINFO
    local root=$1 cpuinfo=$2
    [ -d "$root/etc" ] || die "$root is not a root filesystem"
    [ -f "$cpuinfo" ] || die "$cpuinfo: no such file (the guest's /proc/cpuinfo)"
    mounted "$root/proc" || mount -t proc proc "$root/proc"
    # qemu 7.2's linux-user passes the host's x86 /proc/cpuinfo through: onnxruntime's cpuinfo
    # library then crashes. The guest sees an aarch64 one instead.
    mounted "$root/proc/cpuinfo" || mount --bind "$cpuinfo" "$root/proc/cpuinfo"
    mounted "$root/sys" || mount -t sysfs -o ro sysfs "$root/sys"
    if ! mounted "$root/dev"; then
        mount --rbind /dev "$root/dev"
        mount --make-rslave "$root/dev"
    fi
    cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    mkdir -p "$root$(dirname "$GUEST_CA")"
    cp "$(host_ca)" "$root$GUEST_CA"
}

do_umount() {   # DIR: every mount point under it, deepest first
    local root m failed=0
    root=$(readlink -f "$1")
    [ -d "$root" ] || return 0
    while read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || { echo "rootfs.sh: cannot unmount $m" >&2; failed=1; }
    done < <(awk -v r="$root/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r)
    [ "$failed" = 0 ] || die "mounts left under $root"
}

guest() {       # DIR CMD...: run CMD in the root filesystem with a clean environment
    local root=$1; shift
    chroot "$root" /usr/bin/env -i PATH="$VENV/bin:/usr/local/bin:/usr/bin:/bin" HOME=/root LANG=C.UTF-8 \
        QEMU_CPU="${QEMU_CPU:-cortex-a76}" PIP_CERT="$GUEST_CA" SSL_CERT_FILE="$GUEST_CA" \
        PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_NO_INPUT=1 "$@"
}

build() {       # DIR REQUIREMENTS MIRROR CPUINFO
    local root=$1 reqs=$2 mirror=$3 cpuinfo=$4 partial
    need_root
    [ -f "$reqs" ] || die "$reqs: no such file"
    if [ -e "$root/.complete" ]; then
        say "cached: $root"
        return 0
    fi
    partial="$root.partial"
    do_umount "$partial"
    rm -rf "$partial"
    mkdir -p "$(dirname "$root")"
    trap 'do_umount "$partial" || true' EXIT
    local started=$SECONDS
    say "debootstrap $SUITE $ARCH from $mirror into $partial"
    debootstrap --arch="$ARCH" --variant=minbase --include="$PACKAGES" "$SUITE" "$partial" "$mirror" \
        > "$partial.debootstrap.log" 2>&1 \
        || die "debootstrap failed (its log: $partial.debootstrap.log; debootstrap's own: $partial/debootstrap/debootstrap.log)"
    say "debootstrap done in $((SECONDS - started)) s"
    do_mount "$partial" "$cpuinfo"
    guest "$partial" python3 -c 'import platform, sys; assert platform.machine() == "aarch64", platform.machine(); assert sys.version_info[:2] == (3, 11), sys.version' \
        || die "the root filesystem's python3 is not an aarch64 Python 3.11"
    guest "$partial" python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    cp "$reqs" "$partial/opt/edge-lls/requirements.txt"
    started=$SECONDS
    say "pip install -r requirements.txt (aarch64 wheels, under emulation)"
    guest "$partial" pip install --no-cache-dir --quiet -r /opt/edge-lls/requirements.txt \
        || die "pip install in the root filesystem failed (a package without an aarch64 wheel for cp311?)"
    guest "$partial" pip freeze > "$partial/opt/edge-lls/freeze.txt"
    say "pip done in $((SECONDS - started)) s"
    do_umount "$partial"
    trap - EXIT
    rm -f "$partial.debootstrap.log"
    touch "$partial/.complete"
    rm -rf "$root"
    mv "$partial" "$root"
    say "built $root"
}

cmd=${1:-}
[ -n "$cmd" ] || die "usage: rootfs.sh host-setup | build DIR REQUIREMENTS MIRROR CPUINFO | mount DIR CPUINFO | umount DIR"
shift
case "$cmd" in
    host-setup) host_setup ;;
    build)      [ $# = 4 ] || die "usage: rootfs.sh build DIR REQUIREMENTS MIRROR CPUINFO"; build "$@" ;;
    mount)      [ $# = 2 ] || die "usage: rootfs.sh mount DIR CPUINFO"; need_root; do_mount "$@" ;;
    umount)     [ $# = 1 ] || die "usage: rootfs.sh umount DIR"; need_root; do_umount "$@" ;;
    *)          die "unknown command $cmd (host-setup, build, mount, umount)" ;;
esac
