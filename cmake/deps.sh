#!/bin/sh
# Install the Debian/Ubuntu packages that building and testing softprompt needs, and only those
# that are missing. Safe to run again: with everything present it changes nothing and needs no
# network. Runs apt-get through sudo when not root.
#   sh cmake/deps.sh        what the dev, release and tsan presets need
#   sh cmake/deps.sh fuzz   and clang with its libFuzzer runtime, for the fuzz preset
#   sh cmake/deps.sh mpi    and Open MPI, for data-parallel training (dist/) and its tests
set -eu

packages="g++ cmake ccache libeigen3-dev nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev libopenblas-dev"
for extra in "$@"; do
    case "$extra" in
        fuzz) packages="$packages clang libclang-rt-dev" ;;
        mpi) packages="$packages libopenmpi-dev openmpi-bin" ;;
        *) echo "deps.sh: unknown package group '$extra' (known: fuzz, mpi)" >&2; exit 2 ;;
    esac
done

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: not a Debian-based system; install these (or your system's equivalents) yourself:" >&2
    echo "deps.sh:   $packages" >&2
    exit 0
fi

missing=""
for package in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
    case "$status" in
        *" ok installed") ;;
        *) missing="$missing $package" ;;
    esac
done

if [ -z "$missing" ]; then
    echo "deps.sh: all build dependencies are installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1; then
    sudo="sudo"
else
    echo "deps.sh: need root or sudo to install:$missing" >&2
    exit 1
fi

echo "deps.sh: installing:$missing"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get update
# shellcheck disable=SC2086  # $missing is a list of words
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
