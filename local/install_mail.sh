#!/usr/bin/env bash
# Install the Debian packages the local MailU stand-in (local/mailu.py) runs:
# postfix, dovecot-core and dovecot-imapd. Idempotent: does nothing when the
# binaries are already present. Needs root and apt-get.
#
# The packages' own system services are neither configured nor needed: postfix is
# preseeded with "No configuration", and local/apt.sh keeps service starts denied
# for the duration of the install.
set -euo pipefail
# shellcheck source=local/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/apt.sh"

if apt_have_all postfix postmap dovecot doveadm; then
    echo "install_mail.sh: postfix and dovecot already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v debconf-set-selections >/dev/null 2>&1; then
    debconf-set-selections <<'PRESEED'
postfix postfix/main_mailer_type select No configuration
postfix postfix/mailname string localhost
PRESEED
fi

apt_install install_mail.sh postfix dovecot-core dovecot-imapd

if ! apt_have_all postfix postmap dovecot doveadm; then
    echo "install_mail.sh: packages installed but binaries still missing" >&2
    exit 1
fi
echo "install_mail.sh: installed postfix and dovecot"
