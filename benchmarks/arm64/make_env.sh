#!/usr/bin/env bash
# An ARM64 (aarch64) Python with motivnet-edge's device install, on an x86-64 machine, from
# Debian's and PyPI's packages only, run through qemu's user-mode emulator:
#
#   benchmarks/arm64/make_env.sh ROOT [CPU]      # CPU: qemu's model, default cortex-a72 (Raspberry Pi 4)
#   qemu-aarch64-static -cpu cortex-a72 -L ROOT ROOT/usr/bin/python3.11 -m motivnet_edge.cli predict photo.jpg
#
# binfmt_misc is not mounted here, so nothing in ROOT is run through a chroot: debootstrap's first
# stage downloads and unpacks Debian bookworm's arm64 packages (python3 among them), and
# the device install is put into ROOT/opt/motivnet by the host's pip from aarch64 wheels
# (--platform, --only-binary: nothing compiles, nothing runs under emulation to install).
# ROOT/opt/openvino holds OpenVINO's aarch64 wheel apart, so the ONNX-Runtime-only install is
# what a device gets by default. ROOT/proc/cpuinfo describes the emulated CPU: qemu 7.2 passes
# the host's x86 /proc/cpuinfo through, and ONNX Runtime's CPU probe crashed on it (measured:
# SIGSEGV at import); qemu's -L prefix makes the process read this file instead.
set -euo pipefail
root="${1:?usage: make_env.sh ROOT [CPU]}"
cpu="${2:-cortex-a72}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
python="${PYTHON:-python3}"

if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi
if [ ! -x "$root/usr/bin/python3.11" ]; then
    rm -rf "$root"
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3,libpython3.11-stdlib \
        bookworm "$root" >/dev/null
    # The first stage unpacks only the essential packages; python3 and its libraries wait in the
    # archive cache for a second stage that needs ARM binaries to run. Unpack them all here.
    for deb in "$root"/var/cache/apt/archives/*.deb; do
        dpkg-deb -x "$deb" "$root"
    done
fi

# The emulated CPU's /proc/cpuinfo (Arm part numbers; Features as the kernel prints them).
case "$cpu" in
    cortex-a72) part=0xd08; features="fp asimd evtstrm crc32 cpuid" ;;
    neoverse-n1) part=0xd0c; features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    *) echo "unknown CPU model $cpu: cortex-a72 or neoverse-n1" >&2; exit 2 ;;
esac
mkdir -p "$root/proc"
: > "$root/proc/cpuinfo"
for n in 0 1; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' \
        "$n" "$features" "$part" >> "$root/proc/cpuinfo"
done
echo "$cpu" > "$root/qemu-cpu"

# The device install: the wheel `pip wheel` builds from this repository, and its dependencies
# as aarch64 wheels.
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
"$python" -m pip wheel -q --no-deps -w "$wheels" "$repo" 2>/dev/null
# Every manylinux tag bookworm's glibc (2.36) satisfies, so pip takes the newest wheel that runs there.
platforms=(--python-version 3.11 --implementation cp --only-binary=:all:)
for tag in manylinux_2_36 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do
    platforms+=(--platform "${tag}_aarch64")
done
rm -rf "$root/opt/motivnet" "$root/opt/openvino"
"$python" -m pip install -q --target "$root/opt/motivnet" "${platforms[@]}" "$wheels"/motivnet_edge-*.whl 2>/dev/null
"$python" -m pip install -q --target "$root/opt/openvino" "${platforms[@]}" --no-deps openvino 2>/dev/null \
    || echo "no OpenVINO aarch64 wheel: the OpenVINO checks are skipped" >&2
echo "$root"
