# shellcheck shell=bash disable=SC2034  # a library: its variables are for the scripts that source it
# Sourced, not run: a cached Debian root (trixie or bookworm) made by debootstrap, and running
# commands in it as root (chroot; qemu-user through binfmt_misc when the root's architecture is not
# the host's). Shared by scripts/test-arm64, scripts/build-deb, scripts/test-deb and
# scripts/test-py313.
#
# The caller sets, before sourcing:
#   REPO          the repository root
#   SCRIPT_NAME   prefix of every message ("test-arm64")
#   MAKE_TARGET   the make target that runs the script, for the "must run as root" hint
#   ROOTFS_ARCH   arm64 (default) or amd64: the Debian architecture of the root
#   SUITE         trixie (default: Debian 13, today's Raspberry Pi OS, Python 3.13) or bookworm
#                 (Debian 12, Python 3.11)
#   ROOTFS_FLAVOR optional: a root of other contents beside the plain one (test-py313: "py313"),
#                 with its own INCLUDE
# and may change ROOT afterwards: the directory commands run in and mounts go to. It starts as the
# cached root itself; build-deb and test-deb point it at an overlay of the cache (overlay_root),
# so the cache stays as debootstrap and test-arm64 left it. A script that uses roots of both
# suites or architectures in turn (test-deb) switches with use_root, each root cached apart
# ($CACHE/<suite>-<arch>-rootfs and <suite>-<arch>.lock; pip's cache $CACHE/<arch>-pip).
# The project's wheel is built with a C compiler (build_wheel_in_root), which the roots themselves
# do not get: it is in a layer above each ($CACHE/<suite>-<arch>-build-layer, made once).
#
# Environment:
#   EDGE_AGENT_ARM64_CACHE   cache directory (default: .cache in the repo; CI: outside the clone)
#   EDGE_AGENT_ARM64_MIRROR  Debian mirror for debootstrap (default: the host's apt Debian mirror,
#                            else http://deb.debian.org/debian)
#   EDGE_AGENT_ARM64_REBUILD=1  rebuild the root from scratch

: "${REPO:?REPO must be set before sourcing rootfs.sh}"
: "${SCRIPT_NAME:?SCRIPT_NAME must be set before sourcing rootfs.sh}"
MAKE_TARGET="${MAKE_TARGET:-$SCRIPT_NAME}"
HELPERS="$REPO/scripts/arm64"
CACHE="${EDGE_AGENT_ARM64_CACHE:-$REPO/.cache}"
SUITE="${SUITE:-trixie}"
INCLUDE="${INCLUDE:-python3,python3-venv,python3-pip,ca-certificates,passwd}"
ROOTFS_FLAVOR="${ROOTFS_FLAVOR:-}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# The same paths, user and extras as Dockerfile.arm64, systemd/edge-agent.service and the .deb.
VENV=/opt/edge-agent/venv
EXTRAS=onnx,tflite
STATE_DIR=/var/lib/edge-agent
CONFIG=/etc/edge-agent/config.toml
SERVICE_USER=edge-agent
INNER_PIP_CACHE=/var/cache/edge-agent-pip
INNER_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { echo "$SCRIPT_NAME: $*" >&2; }
die() {
    echo "$SCRIPT_NAME: FAILED: $1" >&2
    shift
    for line in "$@"; do echo "  $line" >&2; done
    exit 1
}
now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

host_arch() {
    case "$(uname -m)" in
        x86_64) echo amd64 ;;
        aarch64 | arm64) echo arm64 ;;
        *) uname -m ;;
    esac
}

emulated() { [ "$ROOTFS_ARCH" != "$(host_arch)" ]; }

suite_version() {
    # The Debian release number of a suite: the "+debN" of the packages built for it.
    case "$1" in
        bookworm) echo 12 ;;
        trixie) echo 13 ;;
        *) die "unsupported suite '$1'" "use trixie (Debian 13) or bookworm (Debian 12)." ;;
    esac
}

use_root() {
    # use_root SUITE ARCH: the root of Debian SUITE (trixie or bookworm) and architecture ARCH
    # (arm64 or amd64) from now on: its cache paths, its key, and ROOT pointing at the cached
    # root. Call it with nothing mounted (unmount_all first) and, between two roots, after
    # unlock_cache.
    suite_version "$1" >/dev/null
    case "$2" in
        arm64 | amd64) ;;
        *) die "unsupported root architecture '$2'" "use arm64 or amd64." ;;
    esac
    SUITE="$1"
    ROOTFS_ARCH="$2"
    if emulated && [ "$ROOTFS_ARCH" != arm64 ]; then
        die "a $ROOTFS_ARCH root on a $(host_arch) host is not supported" \
            "only arm64 is emulated (qemu-aarch64); build $ROOTFS_ARCH on a $ROOTFS_ARCH machine."
    fi
    ROOTFS_NAME="$SUITE-$ROOTFS_ARCH${ROOTFS_FLAVOR:+-$ROOTFS_FLAVOR}"
    ROOTFS="$CACHE/$ROOTFS_NAME-rootfs"
    ROOT="$ROOTFS"
    PIP_CACHE="$CACHE/$ROOTFS_ARCH-pip"
    # What the cached root was built from; a root with another key is rebuilt.
    ROOTFS_KEY="edge-agent-$ROOTFS_ARCH-rootfs v1 $SUITE $ROOTFS_ARCH minbase $INCLUDE"
    ROOTFS_STAMP="$ROOTFS/.edge-agent-rootfs"
    BUILD_LAYER="$CACHE/$ROOTFS_NAME-build-layer"
    CCACHE="$CACHE/$ROOTFS_NAME-ccache"
}
use_root "$SUITE" "${ROOTFS_ARCH:-arm64}"

# ------------------------------------------------------------------------------------ mounts
MOUNTS=()
mount_in() {
    # mount_in TARGET MOUNT-ARGS...: mount and remember TARGET for cleanup (unmounted in reverse).
    local target="$1"
    shift
    mount "$@" "$target"
    MOUNTS+=("$target")
}

mounts_under() {
    # Every mount point at or below $1, deepest first (from the kernel, not from our list).
    awk -v root="$1" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo \
        | sort -r
}

unmount_all() {
    local i target
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        target="${MOUNTS[i]}"
        umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done
    MOUNTS=()
    # Anything left below the root (an earlier run killed with SIGKILL, an interrupted
    # debootstrap's proc and sys in the partial root) goes too.
    local roots=("$ROOTFS" "$ROOTFS.partial")
    if [ "$ROOT" != "$ROOTFS" ]; then roots+=("$ROOT"); fi
    for target in $(for r in "${roots[@]}"; do mounts_under "$r"; done); do
        umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done
}

# qemu-user emulates a Raspberry Pi 4's CPU, not its default "max" (SVE, SME, dotprod, ...): a
# wheel that needs more than ARMv8.0 + CRC then fails here as it would on the device, and OpenBLAS
# does not pick its SME kernels (whose emulation raises spurious floating-point warnings).
# binfmt starts qemu with the environment of each execve, so the variable goes inside env -i too.
# (Ignored when nothing is emulated.)
export QEMU_CPU=cortex-a72

INNER_PID=""
in_root() {
    # in_root CMD...: run CMD in $ROOT as root, with a clean environment. In its own process
    # group, waited for in the background, so that Ctrl-C or a CI timeout reaches the trap at
    # once and the trap can end CMD and its children (pip's build backend) together.
    setsid chroot "$ROOT" /usr/bin/env -i PATH="$INNER_PATH" HOME=/root LANG=C.UTF-8 \
        QEMU_CPU="$QEMU_CPU" "$@" &
    INNER_PID=$!
    local code=0
    wait "$INNER_PID" || code=$?
    INNER_PID=""
    return "$code"
}

stop_group() {
    # stop_group PID: end the process group PID leads (TERM, then KILL after 5 s), if it runs.
    local pid="$1"
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then return 0; fi
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_inner() {
    # End what in_root still runs (only on the way out after a failure or signal).
    stop_group "$INNER_PID"
    INNER_PID=""
}

# ------------------------------------------------------------------------------------ host tools
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        die "must run as root: debootstrap, chroot, mount and binfmt_misc need it." \
            "run: sudo make $MAKE_TARGET   (or: sudo scripts/$SCRIPT_NAME)"
    fi
}

# The host's packages and binfmt_misc are the machine's, not one root's: a script checks and
# changes them holding $CACHE/host.lock (fd 7), so that two scripts at once (.ci/run runs
# test-arm64 beside test-deb) neither race apt's lock nor register qemu twice.
with_host_lock() {
    mkdir -p "$CACHE"
    exec 7>"$CACHE/host.lock"
    flock 7
    "$@"
    exec 7>&-
}

# COMMAND:PACKAGE pairs a script needs on the host besides the ones below.
EXTRA_HOST_TOOLS=()
ensure_host_tools() { with_host_lock ensure_host_tools_locked; }
ensure_host_tools_locked() {
    local missing=() pair
    command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
    if emulated; then
        [ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
        command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
    fi
    [ -f "$KEYRING" ] || missing+=(debian-archive-keyring)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    command -v wget >/dev/null 2>&1 || missing+=(wget)
    command -v flock >/dev/null 2>&1 || missing+=(util-linux)
    for pair in "${EXTRA_HOST_TOOLS[@]}"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        die "missing host tools and no apt-get to install them: ${missing[*]}" \
            "install these (Debian/Ubuntu package names) with your package manager, then rerun."
    fi
    log "apt-get install ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; then
        die "apt-get update failed; cannot install ${missing[*]}" \
            "check /etc/apt/sources.list{,.d} and the network, then: apt-get install ${missing[*]}"
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null; then
        die "apt-get install ${missing[*]} failed" "run it by hand to see why."
    fi
}

# binfmt_misc entry for aarch64 ELF executables, as Debian's qemu-user-static ships it.
AARCH64_MAGIC='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
AARCH64_MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
BINFMT=/proc/sys/fs/binfmt_misc

ensure_binfmt() { with_host_lock ensure_binfmt_locked; }
ensure_binfmt_locked() {
    emulated || return 0
    if [ ! -e "$BINFMT/register" ]; then
        modprobe binfmt_misc 2>/dev/null || true
        if ! mount -t binfmt_misc binfmt_misc "$BINFMT"; then
            die "cannot mount binfmt_misc on $BINFMT" \
                "in a container: run it privileged (docker run --privileged), or register qemu" \
                "on the host: apt-get install qemu-user-static binfmt-support"
        fi
    fi
    [ "$(cat "$BINFMT/status")" = enabled ] || echo 1 >"$BINFMT/status"
    local entry="$BINFMT/qemu-aarch64"
    if [ ! -e "$entry" ]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 \
            || update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
    fi
    # F (fix-binary): the kernel opens qemu at registration, so it also works inside the chroot,
    # where /usr/bin/qemu-aarch64-static does not exist.
    if [ -e "$entry" ] && ! grep -q '^flags:.*F' "$entry"; then
        log "qemu-aarch64 is registered without the F flag; registering it again with F"
        echo -1 >"$entry"
    fi
    if [ ! -e "$entry" ]; then
        echo ":qemu-aarch64:M::${AARCH64_MAGIC}:${AARCH64_MASK}:/usr/bin/qemu-aarch64-static:FP" \
            >"$BINFMT/register" \
            || die "cannot register qemu-aarch64 in $BINFMT/register"
    fi
    grep -q '^enabled' "$entry" || echo 1 >"$entry"
    grep -q '^flags:.*F' "$entry" \
        || die "qemu-aarch64 binfmt entry has no F flag: $(grep '^flags' "$entry")"
}

lock_cache() {
    # One user of the cached root at a time: two would share (and delete) the same root. The lock
    # is held on fd 9 until the process exits.
    mkdir -p "$CACHE"
    exec 9>"$CACHE/$ROOTFS_NAME.lock"
    flock -n 9 || {
        log "another script holds $CACHE/$ROOTFS_NAME.lock; waiting"
        flock 9
    }
    clear_stale_mounts
}

clear_stale_mounts() {
    # With the lock held nobody else uses this root: whatever is still mounted in it or in one of
    # its overlays ($CACHE/*-$ROOTFS_NAME, the build layer's) was left by a run that was killed
    # (SIGKILL skips the traps), and mounting proc or sysfs over it again fails (EBUSY).
    local dir target
    for dir in "$ROOTFS" "$ROOTFS.partial" "$BUILD_LAYER.partial" "$CACHE"/*-"$ROOTFS_NAME"; do
        for target in $(mounts_under "$dir"); do
            log "unmounting $target (left mounted by an earlier run)"
            umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
        done
    done
}

unlock_cache() { exec 9>&-; }

# ------------------------------------------------------------------------------------ the root
detect_mirror() {
    # The Debian mirror this host's apt uses (deb822 .sources and one-line .list files), else the
    # CDN. A mirror of another distribution (Ubuntu) or of debian-security does not qualify.
    if [ -n "${EDGE_AGENT_ARM64_MIRROR:-}" ]; then
        echo "${EDGE_AGENT_ARM64_MIRROR%/}"
        return
    fi
    local uri
    for uri in $(
        {
            sed -n 's/^[[:space:]]*URIs:[[:space:]]*//p' \
                /etc/apt/sources.list.d/*.sources 2>/dev/null
            sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
        } | tr ' ' '\n'
    ); do
        case "${uri%/}" in
            http://*/debian | https://*/debian) echo "${uri%/}"; return ;;
        esac
    done
    echo http://deb.debian.org/debian
}

check_mirror() {
    local mirror="$1"
    if ! wget -q -T 30 -t 2 -O /dev/null "$mirror/dists/$SUITE/Release"; then
        die "cannot fetch $mirror/dists/$SUITE/Release" \
            "debootstrap needs a reachable Debian mirror;" \
            "set EDGE_AGENT_ARM64_MIRROR=URL to use another one."
    fi
}

rootfs_cached() {
    [ -f "$ROOTFS_STAMP" ] && [ "$(cat "$ROOTFS_STAMP")" = "$ROOTFS_KEY" ] \
        && [ -x "$ROOTFS/usr/bin/python3" ] && [ -f "$ROOTFS/etc/ssl/certs/ca-certificates.crt" ] \
        && [ -x "$ROOTFS/usr/sbin/useradd" ]
}

remove_rootfs() {
    unmount_all
    local left
    left="$(mounts_under "$ROOTFS"; mounts_under "$ROOTFS.partial")"
    if [ -n "$left" ]; then
        die "something is still mounted under $ROOTFS; not deleting it" "$left"
    fi
    rm -rf --one-file-system "$ROOTFS" "$ROOTFS.partial"
}

build_rootfs() {
    local mirror start
    mirror="$(detect_mirror)"
    check_mirror "$mirror"
    remove_rootfs
    log "debootstrap $SUITE $ROOTFS_ARCH from $mirror into $ROOTFS" \
        "($(emulated && echo "about 5 minutes" || echo "a minute or two"))"
    start="$(now)"
    # In its own process group and waited for, like in_root, so a signal stops it at once.
    setsid debootstrap --arch="$ROOTFS_ARCH" --variant=minbase --include="$INCLUDE" \
        --keyring="$KEYRING" "$SUITE" "$ROOTFS.partial" "$mirror" \
        >"$CACHE/$ROOTFS_NAME-debootstrap.log" 2>&1 &
    INNER_PID=$!
    local code=0
    wait "$INNER_PID" || code=$?
    INNER_PID=""
    if [ "$code" -ne 0 ]; then
        tail -n 25 "$CACHE/$ROOTFS_NAME-debootstrap.log" >&2
        die "debootstrap failed; full log: $CACHE/$ROOTFS_NAME-debootstrap.log" \
            "if the second stage could not execute arm64 binaries, qemu's binfmt entry is broken:" \
            "cat $BINFMT/qemu-aarch64"
    fi
    rm -f "$ROOTFS.partial"/var/cache/apt/archives/*.deb
    mv "$ROOTFS.partial" "$ROOTFS"
    echo "$ROOTFS_KEY" >"$ROOTFS_STAMP"
    ROOTFS_BUILD_S="$(since "$start")"
    log "$SUITE $ROOTFS_ARCH root built in ${ROOTFS_BUILD_S} s"
}

prepare_rootfs() {
    # The cached root, built when missing, stale or broken. Runs in the cache itself ($ROOTFS).
    ROOTFS_BUILD_S=0
    local via="" ROOT="$ROOTFS"
    if emulated; then via=" under qemu"; fi
    if [ "${EDGE_AGENT_ARM64_REBUILD:-0}" = 1 ] || ! rootfs_cached; then
        build_rootfs
    else
        log "using cached $SUITE $ROOTFS_ARCH root $ROOTFS"
    fi
    # Prove the root runs (binfmt + qemu + a sane Python); a broken cached root is rebuilt once.
    if ! in_root /usr/bin/python3 -c 'import ensurepip, ssl, venv' 2>/dev/null; then
        if [ "$ROOTFS_BUILD_S" != 0 ]; then
            die "the fresh $SUITE $ROOTFS_ARCH root cannot run python3$via" \
                "$(if emulated; then echo "binfmt entry: $(tr '\n' ' ' <"$BINFMT/qemu-aarch64")"; fi)"
        fi
        log "cached $SUITE $ROOTFS_ARCH root is broken; rebuilding"
        build_rootfs
        in_root /usr/bin/python3 -c 'import ensurepip, ssl, venv' \
            || die "the rebuilt $SUITE $ROOTFS_ARCH root cannot run python3$via"
    fi
}

overlay_root() {
    # overlay_root NAME [LAYER]: mount a writable overlay of the cached root (under LAYER, an
    # earlier overlay's upper directory, when given) at $CACHE/NAME/root and point ROOT at it;
    # what commands change there goes to $CACHE/NAME/upper, never into the cache.
    local base="$CACHE/$1" lower="${2:+$2:}$ROOTFS"
    remove_overlay "$base"
    mkdir -p "$base/upper" "$base/work" "$base/root"
    mount_in "$base/root" -t overlay overlay \
        -o "lowerdir=$lower,upperdir=$base/upper,workdir=$base/work" \
        || die "cannot mount an overlay of $lower at $base/root" \
            "the kernel needs overlayfs (modprobe overlay); in a container, run it privileged."
    ROOT="$base/root"
}

unmount_under() {
    # unmount_under DIR: unmount DIR and everything below it, deepest first.
    local target
    for target in $(mounts_under "$1"); do
        umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
    done
}

remove_overlay() {
    # remove_overlay DIR: unmount what is below DIR/root and delete DIR.
    local base="$1" left
    unmount_under "$base/root"
    left="$(mounts_under "$base")"
    if [ -n "$left" ]; then
        die "something is still mounted under $base; not deleting it" "$left"
    fi
    rm -rf --one-file-system "$base"
}

mount_rootfs() {
    # proc, sys, dev, run, the repository (read-only at /src) and pip's cache, in $ROOT.
    mount_in "$ROOT/proc" -t proc proc
    if [ "$ROOTFS_ARCH" = arm64 ]; then
        # onnxruntime's cpuinfo library crashes (SIGSEGV) parsing the x86 /proc/cpuinfo that
        # qemu 7.2 passes through; give it what a Raspberry Pi 4 shows.
        mount_in "$ROOT/proc/cpuinfo" --bind -o ro "$HELPERS/cpuinfo-cortex-a72"
    fi
    mount_in "$ROOT/sys" -t sysfs -o ro sysfs
    if [ -c "$ROOT/dev/null" ] && [ -c "$ROOT/dev/urandom" ]; then
        mkdir -p "$ROOT/dev/shm"
        mount_in "$ROOT/dev/shm" -t tmpfs -o mode=1777,size=64m tmpfs
    else
        mount_in "$ROOT/dev" --bind /dev
    fi
    mount_in "$ROOT/run" -t tmpfs -o mode=0755,size=16m tmpfs
    mkdir -p "$ROOT/src" "$ROOT$INNER_PIP_CACHE" "$PIP_CACHE"
    mount_in "$ROOT/src" --bind -o ro "$REPO"
    mount_in "$ROOT$INNER_PIP_CACHE" --bind "$PIP_CACHE"
    # DNS for pip; the root shares the host's network.
    if [ -e /etc/resolv.conf ]; then
        rm -f "$ROOT/etc/resolv.conf"
        cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    fi
}

# ------------------------------------------------------------------------------------ pip
set_pip_env() {
    # PIP_ENV: the environment for pip in the root (after mount_rootfs: /run is the root's tmpfs).
    PIP_ENV=(PIP_CACHE_DIR="$INNER_PIP_CACHE" PIP_DISABLE_PIP_VERSION_CHECK=1
        PIP_NO_INPUT=1 PIP_DEFAULT_TIMEOUT=120 PIP_PROGRESS_BAR=off)
    if [ -n "${PIP_INDEX_URL:-}" ]; then PIP_ENV+=(PIP_INDEX_URL="$PIP_INDEX_URL"); fi
    # pip in the root trusts what the host trusts: the same public roots on a plain machine, plus
    # the CA of a TLS-inspecting proxy where the network has one (the root's own store lacks it).
    local host_ca="${PIP_CERT:-${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}}"
    host_ca="${host_ca:-/etc/ssl/certs/ca-certificates.crt}"
    if [ -f "$host_ca" ]; then
        cp -L "$host_ca" "$ROOT/run/host-ca-bundle.crt"
        PIP_ENV+=(PIP_CERT=/run/host-ca-bundle.crt)
    fi
}

# ------------------------------------------------------------------------------------ the wheel
# The wheel compiles the learning tick (setup.py), so it is built with a C compiler and the C
# library's headers (no python3-dev: the library does not use Python's C API). The cached roots do
# not get them: test-arm64's venv, the .debs' test roots and test-docker's base image are what a
# device has, no compiler. They are in a layer above the root instead, BUILD_LAYER: the upper
# directory of an overlay in which `apt-get install $BUILD_PACKAGES` ran, kept and used as the
# top layer of the overlay the wheel is built in. Made once per root and list: its key (beside
# it, .key) is the root's (which a rebuilt root changes, with its stamp's time) and the list's.
# dpkg-dev: dpkg-buildflags, the suite's flags for the .deb's build (build_wheel_in_root debian).
# ccache: the tick's compilation under qemu takes a minute or more, and most runs compile the same
# sources with the same flags again; its cache is $CACHE/<suite>-<arch>-ccache.
BUILD_PACKAGES=(gcc libc6-dev dpkg-dev ccache)

ensure_build_layer() {
    # The build layer of the current root, made when missing or stale (BUILD_LAYER_S: how long
    # that took, 0 when it was there). After prepare_rootfs, with the root's lock held.
    local key base="$BUILD_LAYER.partial" outer="$ROOT" mounted=${#MOUNTS[@]} start
    BUILD_LAYER_S=0
    key="$ROOTFS_KEY $(stat -c %Y "$ROOTFS_STAMP") ${BUILD_PACKAGES[*]}"
    if [ -d "$BUILD_LAYER" ] && [ "$(cat "$BUILD_LAYER.key" 2>/dev/null)" = "$key" ]; then
        return
    fi
    start="$(now)"
    log "apt-get install ${BUILD_PACKAGES[*]} in a layer above the $SUITE $ROOTFS_ARCH root" \
        "($BUILD_LAYER; once)"
    rm -rf --one-file-system "$BUILD_LAYER" "$BUILD_LAYER.key"
    overlay_root "${base##*/}"
    mount_in "$ROOT/proc" -t proc proc
    rm -f "$ROOT/etc/resolv.conf"
    cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
    in_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
        || die "apt-get update in the $SUITE $ROOTFS_ARCH root failed (see above)"
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o Dpkg::Use-Pty=0 \
        --no-install-recommends "${BUILD_PACKAGES[@]}" >&2 \
        || die "apt-get install ${BUILD_PACKAGES[*]} in the $SUITE $ROOTFS_ARCH root failed (see above)"
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
    unmount_under "$base/root"
    MOUNTS=("${MOUNTS[@]:0:mounted}")
    ROOT="$outer"
    mv "$base/upper" "$BUILD_LAYER"
    remove_overlay "$base"
    echo "$key" >"$BUILD_LAYER.key"
    BUILD_LAYER_S="$(since "$start")"
    log "build layer made in $BUILD_LAYER_S s ($(du -sm "$BUILD_LAYER" | cut -f1) MB)"
}

enter_build_overlay() {
    # enter_build_overlay NAME: ROOT becomes a writable overlay of the root under its build layer
    # (ensure_build_layer first) at $CACHE/NAME, mounted as mount_rootfs mounts, with pip's
    # environment (set_pip_env) and the root's ccache at /var/cache/edge-agent-ccache;
    # OVERLAY_OUTER is the ROOT before. leave_build_overlay goes back and deletes the overlay.
    OVERLAY_OUTER="$ROOT" OVERLAY_MOUNTED=${#MOUNTS[@]} OVERLAY_BASE="$CACHE/$1"
    overlay_root "$1" "$BUILD_LAYER"
    mount_rootfs
    set_pip_env
    mkdir -p "$CCACHE" "$ROOT/var/cache/edge-agent-ccache"
    mount_in "$ROOT/var/cache/edge-agent-ccache" --bind "$CCACHE"
}
leave_build_overlay() {
    unmount_under "$OVERLAY_BASE/root"
    MOUNTS=("${MOUNTS[@]:0:OVERLAY_MOUNTED}")
    ROOT="$OVERLAY_OUTER"
    remove_overlay "$OVERLAY_BASE"
}
build_wheel_in_root() {
    # build_wheel_in_root [debian]: edge-agent's wheel from the working tree, built by the root's
    # python3 and pip in an overlay of the root and its build layer (ensure_build_layer; with the
    # root's lock held), checked to carry the compiled tick and copied into $ROOT; WHEEL is its
    # path there (under /tmp/edge-agent-build/wheel), WHEEL_S the seconds it took, the build
    # layer's aside. debian: the tick compiled and linked as a Debian package's binaries are, with
    # the suite's flags (dpkg-buildflags; every hardening feature, bind-now too) and stripped (-s),
    # for the .deb (lintian). Needs set_pip_env.
    ensure_build_layer
    local name start flags=() var value
    start="$(now)"
    enter_build_overlay "wheel-build-$ROOTFS_NAME"
    in_root env CCACHE_DIR=/var/cache/edge-agent-ccache ccache --zero-stats >/dev/null
    # The repo is read-only at /src; setuptools writes build/ and *.egg-info, so build a copy (and
    # without a library an editable install built in place there for the host's Python).
    in_root /bin/sh -c "mkdir -p /tmp/edge-agent-build/src && cd /src && tar -cf - \
        --exclude=./.git --exclude=./.venv --exclude=./.cache --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.mypy_cache \
        --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude=./.hypothesis \
        --exclude=./state --exclude='*.so' \
        . | tar -C /tmp/edge-agent-build/src -xf -"
    if [ "${1:-}" = debian ]; then
        for var in CFLAGS CPPFLAGS LDFLAGS; do
            value="$(in_root /bin/sh -c "cd /tmp/edge-agent-build/src \
                && DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get $var")" \
                || die "dpkg-buildflags --get $var failed in the $SUITE $ROOTFS_ARCH root"
            if [ "$var" = LDFLAGS ]; then value="$value -s"; fi
            flags+=("$var=$value")
        done
        log "building the wheel with ${flags[*]}"
    fi
    # PIP_ROOT_USER_ACTION: pip wheel writes nothing into the root's Python; no warning about it.
    # The compiler through ccache (/usr/lib/ccache first on PATH: setuptools calls the triplet's
    # gcc, which ccache links there); a hit is what the same sources and flags gave before.
    # EDGE_AGENT_TICK_PROFILE as the caller has it (setup.py builds the tick profile-guided
    # unless it is 0; .ci/run sets 0 for the roots under qemu, where the profile's run and second
    # compile take about ten minutes a wheel: docs/arm64.md).
    in_root "${PIP_ENV[@]}" "${flags[@]}" PIP_ROOT_USER_ACTION=ignore \
        EDGE_AGENT_TICK_PROFILE="${EDGE_AGENT_TICK_PROFILE:-1}" \
        PATH="/usr/lib/ccache:$INNER_PATH" CCACHE_DIR=/var/cache/edge-agent-ccache \
        CCACHE_MAXSIZE=200M /usr/bin/python3 -m pip wheel --no-deps -q \
        -w /tmp/edge-agent-build/wheel /tmp/edge-agent-build/src \
        || die "building the edge-agent wheel in the $SUITE $ROOTFS_ARCH root failed (see pip's output above)"
    name="$(cd "$ROOT/tmp/edge-agent-build/wheel" && ls edge_agent_runtime-*.whl)"
    WHEEL_CCACHE="$(in_root env CCACHE_DIR=/var/cache/edge-agent-ccache ccache --print-stats \
        | awk '$1 ~ /_cache_hit$/ { hit += $2 } $1 == "cache_miss" { miss += $2 }
               END { printf "%d of %d compilations from ccache", hit, hit + miss }')"
    # The extension is optional (pip succeeds without it where there is no compiler): here the
    # wheel must carry it.
    python3 -c 'import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
sys.exit(not any(n.startswith("edge_agent/aif/kernels/native/_tick.") for n in names))' \
        "$ROOT/tmp/edge-agent-build/wheel/$name" \
        || die "the wheel $name has no compiled tick (pip wheel -v shows the compiler's errors)"
    rm -rf "$OVERLAY_OUTER/tmp/edge-agent-build"
    mkdir -p "$OVERLAY_OUTER/tmp/edge-agent-build/wheel"
    cp "$ROOT/tmp/edge-agent-build/wheel/$name" "$OVERLAY_OUTER/tmp/edge-agent-build/wheel/"
    leave_build_overlay
    WHEEL="/tmp/edge-agent-build/wheel/$name"
    WHEEL_S="$(since "$start")"
    log "built $name in $WHEEL_S s ($WHEEL_CCACHE)"
}
