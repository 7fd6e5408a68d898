"""Reading a password without putting it in argv (shell history, `ps`) or on the screen.

From an environment variable (`--password-env NAME`), from the first line of standard input
(`--password-stdin`), or else from a prompt that does not echo when standard input is a terminal.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from typing import TextIO

from cli.errors import CliError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--password-env", metavar="NAME", help="read the password from environment variable NAME (else: a prompt)"
    )
    source.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )


def read_password(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
    environ: dict[str, str] | None = None,
) -> str:
    """The password the arguments point at; never echoed, never taken from the command line."""
    stdin = stdin or sys.stdin
    if args.password_env:
        value = (os.environ if environ is None else environ).get(args.password_env, "")
        if not value:
            raise CliError(f"environment variable {args.password_env} is empty or not set")
        return value
    if args.password_stdin:
        value = stdin.readline().rstrip("\r\n")
        if not value:
            raise CliError("no password on standard input")
        return value
    if not stdin.isatty():
        raise CliError("give the password with --password-env NAME or --password-stdin (never on the command line)")
    value = prompt("SMTP password: ")
    if not value:
        raise CliError("no password given")
    return value
