#!/usr/bin/env bash
# Install the Debian packages the local MailU stand-in (local/mailu.py) runs:
# postfix, dovecot-core and dovecot-imapd. Idempotent: does nothing when the
# binaries are already present. Needs root and apt-get.
#
# The packages' own system services are neither configured nor needed: postfix is
# preseeded with "No configuration", and a policy-rc.d that denies service starts
# is put in place for the duration of the install (an existing one is kept).
set -euo pipefail

have_all() {
    local bin
    for bin in postfix postmap dovecot doveadm; do
        if ! command -v "$bin" >/dev/null 2>&1 \
            && [ ! -x "/usr/sbin/$bin" ] && [ ! -x "/usr/bin/$bin" ]; then
            return 1
        fi
    done
    return 0
}

if have_all; then
    echo "install_mail.sh: postfix and dovecot already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_mail.sh: must run as root (apt-get install postfix dovecot-core dovecot-imapd)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_mail.sh: apt-get not found; install postfix, dovecot-core and dovecot-imapd" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

if command -v debconf-set-selections >/dev/null 2>&1; then
    debconf-set-selections <<'EOF'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
EOF
fi

# Keep the packages' init scripts from starting system-wide daemons.
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
        postfix dovecot-core dovecot-imapd
}
if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
    apt-get update
    install
elif ! install; then
    apt-get update
    install
fi

if ! have_all; then
    echo "install_mail.sh: packages installed but binaries still missing" >&2
    exit 1
fi
echo "install_mail.sh: installed postfix and dovecot"
