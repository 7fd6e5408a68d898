"""The preset dictionary inline bodies are compressed with: its bytes never change (stored items need
them), and a body packed with it comes back byte for byte."""

from __future__ import annotations

import hashlib
import zlib

from petrel.adapters.message_items import pack_body, unpack_body
from petrel.mail import body_dictionary

# Written here, not read from the module: changing V1 and its recorded hash together must still fail.
V1_SHA256 = "d3ae300fa0e02225ee2e9772ef5dc577a36488156e5236bc2761ee95d1cd8c72"


def test_version_1_never_changes() -> None:
    assert hashlib.sha256(body_dictionary.V1).hexdigest() == V1_SHA256 == body_dictionary.V1_SHA256


def test_a_body_comes_back_byte_for_byte_and_smaller_than_with_zlib_alone() -> None:
    body = (
        b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="===============1=="\r\n\r\n'
        b'--===============1==\r\nContent-Type: text/plain; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\nHello, your order has shipped.\r\n"
        b"--===============1==--\r\n"
    )
    packed = pack_body(body)
    assert unpack_body(packed) == body
    assert len(packed) < len(zlib.compress(body, 6))
    assert unpack_body(pack_body(b"")) == b""
