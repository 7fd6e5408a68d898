"""Finding and installing Postfix and Dovecot: what the stand-in runs, and the one place that says how
to get them (``local/install_mail.sh``, Debian packages, root and apt-get)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REQUIRED_BINARIES: tuple[str, ...] = ("postfix", "postmap", "dovecot", "doveadm")
# Daemons live in sbin directories that a user's PATH often lacks.
SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin")
INSTALL_HINT = (
    "install the Debian packages postfix, dovecot-core and dovecot-imapd "
    "(as root: local/install_mail.sh, or apt-get install postfix dovecot-core dovecot-imapd)"
)
INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / "install_mail.sh"


def which(name: str) -> str | None:
    """Find an executable on PATH or in the usual sbin directories (PATH may lack them)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def binary(name: str) -> str:
    """The path of a required program; RuntimeError with the install hint when it is missing."""
    found = which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: {INSTALL_HINT}")
    return found


def ensure_installed() -> list[str]:
    """Return the binaries the stand-in needs that are missing (empty when all are present)."""
    return [name for name in REQUIRED_BINARIES if which(name) is None]


def install_packages() -> None:
    """Install Postfix and Dovecot with ``local/install_mail.sh`` (root + apt-get only).

    Raises RuntimeError with a one-line hint when that is not possible or fails.
    """
    if not ensure_installed():
        return
    if os.geteuid() != 0 or which("apt-get") is None:
        raise RuntimeError(f"postfix/dovecot missing ({', '.join(ensure_installed())}): {INSTALL_HINT}")
    result = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=command_env(),
        check=False,
    )
    missing = ensure_installed()
    if result.returncode != 0 or missing:
        tail = "\n".join(result.stdout.splitlines()[-30:])
        raise RuntimeError(
            f"{INSTALL_SCRIPT.name} failed (rc={result.returncode}, still missing: {missing}): {INSTALL_HINT}\n{tail}"
        )


def command_env() -> dict[str, str]:
    """The environment for Postfix/Dovecot commands: sbin on PATH, a C locale, and no ``MAIL_CONFIG``
    inherited from the caller (it would point Postfix's tools at another instance)."""
    env = {key: value for key, value in os.environ.items() if key != "MAIL_CONFIG"}
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    parts += [directory for directory in SBIN_DIRS if directory not in parts]
    env["PATH"] = os.pathsep.join(parts)
    env.setdefault("LANG", "C")
    return env
