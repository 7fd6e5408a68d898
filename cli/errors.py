"""The one error type commands raise for the operator to read."""

from __future__ import annotations


class CliError(Exception):
    """Printed as one line (`petrel: <text>`); the command exits with status 2."""
