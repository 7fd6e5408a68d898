"""`make bench` (dkim): CPU per DKIM signature, Petrel's signer against `dkim.sign` in the same run.

One 5 KB message, one RSA-2048 key, relaxed/relaxed, the same h= list: `petrel.mail.dkim.sign` with the
key loaded once (as the send worker holds it) against `dkim.sign` with the PEM (its only form). CPU
time per call, median of interleaved rounds so drift hits both alike. Both outputs are checked to be
the same bytes first, so the figures compare the same work. Ed25519 is printed for information.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ROUNDS = 15
OURS_CALLS = 100  # per round
DKIMPY_CALLS = 5  # per round: about 12 ms each
TARGET_MS = 1.5  # CPU per RSA-2048 signature of a 5 KB message
SELECTOR, DOMAIN = "s2026", "shop.example.com"


def message_5k() -> bytes:
    """A 5 KB transactional message with the headers a Petrel send carries."""
    head = (
        b"From: Shop <orders@shop.example.com>\r\nTo: Ana <ana@customer.example.org>\r\n"
        b"Subject: =?utf-8?q?Ihre_Bestellung_ist_unterwegs?=\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n"
        b"Message-ID: <bench-dkim@shop.example.com>\r\nMIME-Version: 1.0\r\n"
        b"List-Unsubscribe: <https://shop.example.com/u/abc>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    line = b"Thank you for your order.  Your parcel leaves our warehouse today and arrives soon. \r\n"
    body = line * ((5 * 1024 - len(head)) // len(line) + 1)
    return head + body


def cpu_per_call(function: Callable[[], object], calls: int) -> float:
    started = time.process_time()
    for _ in range(calls):
        function()
    return (time.process_time() - started) / calls


def main() -> int:
    import dkim

    from petrel.mail.dkim import SIGNED_HEADERS, DkimKey, parse, sign, signed_header_list

    raw = message_5k()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    loaded = DkimKey.load(key)
    names = signed_header_list(parse(raw)[0], SIGNED_HEADERS)
    include = [name.encode() for name in names]

    def theirs() -> bytes:
        field: bytes = dkim.sign(
            raw, SELECTOR.encode(), DOMAIN.encode(), pem, canonicalize=(b"relaxed", b"relaxed"), include_headers=include
        )
        return field

    reference = theirs()
    found = re.search(rb"t=(\d+);", reference)
    assert found is not None
    same_t = int(found.group(1))
    mine = sign(raw, selector=SELECTOR, domain=DOMAIN, private_key=loaded, timestamp=same_t)
    assert mine == reference, "Petrel's signature differs from dkimpy's"

    def ours() -> bytes:
        return sign(raw, selector=SELECTOR, domain=DOMAIN, private_key=loaded, timestamp=same_t)

    ed = DkimKey.load(ed25519.Ed25519PrivateKey.generate())

    def ours_ed25519() -> bytes:
        return sign(raw, selector=SELECTOR, domain=DOMAIN, private_key=ed, timestamp=same_t)

    cpu_per_call(ours, 20)  # warm up
    cpu_per_call(theirs, 2)
    mine_s, theirs_s, ed_s = [], [], []
    for _ in range(ROUNDS):
        mine_s.append(cpu_per_call(ours, OURS_CALLS))
        theirs_s.append(cpu_per_call(theirs, DKIMPY_CALLS))
        ed_s.append(cpu_per_call(ours_ed25519, OURS_CALLS))
    ours_ms, theirs_ms = statistics.median(mine_s) * 1000, statistics.median(theirs_s) * 1000
    ed_ms = statistics.median(ed_s) * 1000
    ok = ours_ms <= TARGET_MS
    print(
        f"dkim sign        petrel {ours_ms:6.3f} ms CPU | dkim.sign {theirs_ms:6.2f} ms"
        f" | {theirs_ms / ours_ms:.1f}x faster"
        f" (RSA-2048, {len(raw) // 1024} KB, byte-identical; <= {TARGET_MS} ms: {'met' if ok else 'MISSED'})"
    )
    print(f"dkim sign        petrel Ed25519 {ed_ms:6.3f} ms CPU")
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
