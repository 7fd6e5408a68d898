#!/usr/bin/env bash
# Install the Debian package the local DNS server (local/knot.py) runs: knot
# (knotd and knotc). Idempotent: does nothing when the binaries are already present.
# Needs root and apt-get.
#
# The package's own system service is not wanted: Petrel runs its own knotd as a
# child process on a loopback port, with a configuration under its state directory.
# A policy-rc.d that denies service starts is put in place for the duration of the
# install (an existing one is kept), and a knot service that still got started is
# stopped and disabled, so it never holds port 53 or the package's default paths.
set -euo pipefail

have_all() {
    local bin
    for bin in knotd knotc; do
        if ! command -v "$bin" >/dev/null 2>&1 \
            && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
            return 1
        fi
    done
    return 0
}

stop_system_service() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now knot.service >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service knot stop >/dev/null 2>&1 || true
    fi
}

if have_all; then
    echo "install_dns.sh: knot already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_dns.sh: must run as root (apt-get install knot)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_dns.sh: apt-get not found; install Knot DNS (knotd, knotc)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep the package's init script from starting a system-wide daemon.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
fi
cleanup() {
    if [ "$created_policy" -eq 1 ]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

# One `apt-get update` only when the package lists have never been fetched or
# the install fails for want of them.
install() {
    apt-get install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        knot
}
if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
    apt-get update
    install
elif ! install; then
    apt-get update
    install
fi
stop_system_service

if ! have_all; then
    echo "install_dns.sh: package installed but knotd/knotc still missing" >&2
    exit 1
fi
echo "install_dns.sh: installed knot"
