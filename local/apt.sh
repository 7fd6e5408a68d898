# Shared by local/install_mail.sh and local/install_dns.sh (sourced, not run): find a
# package's binaries, and install Debian packages without letting their own system
# services start. Each function takes the calling script's name (for its messages).

# apt_have_all BIN...: every binary is on PATH or in /usr/sbin or /usr/bin (root's
# PATH may lack the sbin directories an unprivileged check needs).
apt_have_all() {
    local bin
    for bin in "$@"; do
        if ! command -v "$bin" >/dev/null 2>&1 \
            && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
            return 1
        fi
    done
    return 0
}

# apt_install SCRIPT PACKAGE...: apt-get install the packages as root, non-interactively,
# keeping existing configuration files. A policy-rc.d that denies service starts is in
# place for the duration (an existing one is kept): Petrel runs its own daemons as child
# processes on loopback ports, never the packages' system-wide ones. One `apt-get update`
# only when the package lists have never been fetched or the install fails for want of
# them. Exits the script when not root or without apt-get.
apt_install() {
    local script="$1"
    shift
    if [ "$(id -u)" -ne 0 ]; then
        echo "$script: must run as root (apt-get install $*)" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$script: apt-get not found; install $*" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive

    local policy=/usr/sbin/policy-rc.d
    local created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=1
    fi
    # A failed install exits the script (set -e): the trap removes the policy then too.
    if [ "$created_policy" -eq 1 ]; then
        trap "rm -f '$policy'" EXIT
    fi

    if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
        apt-get update
        _apt_get_install "$@"
    elif ! _apt_get_install "$@"; then
        apt-get update
        _apt_get_install "$@"
    fi

    if [ "$created_policy" -eq 1 ]; then
        rm -f "$policy"
        trap - EXIT
    fi
}

_apt_get_install() {
    apt-get install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "$@"
}
