"""What commands print: a table with a header row, or JSON with `--json`; notes go to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns under an upper-case header (the header alone when there are no rows)."""
    header = [column.upper() for column in columns]
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(columns))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) for line in [header, *cells]
    ]
    return "\n".join(line.rstrip() for line in lines)


@dataclass
class Output:
    as_json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def rows(self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
        """A list (every row's fields with --json, the named columns otherwise)."""
        if self.as_json:
            self.json(list(rows))
        else:
            print(table(rows, columns), file=self.out)

    def record(self, row: Mapping[str, Any], columns: Sequence[str]) -> None:
        """One record: a one-row table, or its JSON object."""
        if self.as_json:
            self.json(row)
        else:
            print(table([row], columns), file=self.out)

    def json(self, value: Any) -> None:
        print(json.dumps(value, indent=2, default=str), file=self.out)

    def line(self, text: str) -> None:
        """A result in words (with --json, a command prints JSON instead)."""
        print(text, file=self.out)

    def note(self, text: str) -> None:
        """Advice for the operator, never part of the result (stderr, so `--json` output stays parseable)."""
        print(text, file=self.err)
