#!/usr/bin/env bash
# Install the Debian package the local DNS server (local/knot.py) runs: knot
# (knotd and knotc). Idempotent: does nothing when the binaries are already present.
# Needs root and apt-get.
#
# The package's own system service is not wanted: Petrel runs its own knotd as a
# child process on a loopback port, with a configuration under its state directory.
# local/apt.sh keeps service starts denied for the duration of the install, and a
# knot service that still got started is stopped and disabled, so it never holds
# port 53 or the package's default paths.
set -euo pipefail
# shellcheck source=local/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

stop_system_service() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now knot.service >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        service knot stop >/dev/null 2>&1 || true
    fi
}

if apt_have_all knotd knotc; then
    echo "install_dns.sh: knot already installed"
    exit 0
fi

apt_install install_dns.sh knot
stop_system_service

if ! apt_have_all knotd knotc; then
    echo "install_dns.sh: package installed but knotd/knotc still missing" >&2
    exit 1
fi
echo "install_dns.sh: installed knot"
