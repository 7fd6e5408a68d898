"""What text MIME can carry: the one rule shared by the request models and `mail.mime`."""

from __future__ import annotations

import unicodedata

# Unicode categories MIME cannot carry in a header (a subject, a display name, a header value, a
# filename): controls (C0, DEL, C1, which include VT, FF, FS/GS/RS and NEL), line and paragraph
# separators (U+2028, U+2029) and lone surrogates. A body (text or HTML) may hold any character but a
# lone surrogate (it cannot be encoded) and NUL (RFC 5322 forbids it; it is binary, not text). The
# request models refuse with these same functions, so whatever they accept `build_mime` builds.
_NEVER = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _character_name(char: str) -> str:
    return f"U+{ord(char):04X}" + (f" ({unicodedata.name(char)})" if unicodedata.name(char, "") else "")


def header_text_problem(value: str, *, allow_tab: bool = True) -> str | None:
    """Why `value` cannot be a header's text (one sentence), or None when it can."""
    for char in value:
        if unicodedata.category(char) in _NEVER and not (allow_tab and char == "\t"):
            return f"must not contain the control character {_character_name(char)}"
    return None


def body_text_problem(value: str) -> str | None:
    """Why `value` cannot be a text or HTML body, or None when it can."""
    if "\0" in value:
        return "must not contain NUL (U+0000)"
    try:
        value.encode("utf-8")  # fails only on a lone surrogate; fast on a large body
    except UnicodeEncodeError as exc:
        return f"must not contain a lone surrogate ({_character_name(value[exc.start])})"
    return None
