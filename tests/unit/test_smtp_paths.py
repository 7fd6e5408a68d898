"""petrel.adapters.smtp.quoted_path: the MAIL FROM and RCPT TO path, always what smtplib's quoteaddr
writes (the fast path for plain addresses must not change a byte of any command)."""

from __future__ import annotations

import smtplib

from hypothesis import given
from hypothesis import strategies as st

from petrel.adapters.smtp import quoted_path

# Pieces of addresses, plain and otherwise: the fast path's characters and the ones that make
# quoteaddr parse (quotes, brackets, spaces, comments, specials, a second @, non-ASCII).
_LOCAL = st.sampled_from(["a", "Z9", "+", "=", "_", "-", ".", "..", '"', " ", "(c)", "<", ">", ",", "!", "é", "@"])
_DOMAIN = st.sampled_from(["example", "com", "-", ".", "x1", "[1.2.3.4]", " ", "é", ">"])
ADDRESSES = st.builds(
    lambda local, domain: "".join(local) + "@" + "".join(domain),
    st.lists(_LOCAL, max_size=8),
    st.lists(_DOMAIN, max_size=6),
) | st.text(max_size=30)


@given(ADDRESSES)
def test_every_path_is_quoteaddrs(address: str) -> None:
    assert quoted_path(address) == smtplib.quoteaddr(address)


def test_a_verp_return_path_and_a_recipient_are_their_own_paths() -> None:
    verp = "bounces+em_01jabcdefghijklmnopqrstuv.ms_01jabc=example.com@bounce.example.com"
    assert quoted_path(verp) == f"<{verp}>" == smtplib.quoteaddr(verp)
    assert quoted_path("r1@example.org") == "<r1@example.org>"
    assert quoted_path("") == "<>"
