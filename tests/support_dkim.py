"""DKIM helpers for tests: key material, a domain with keys whose private halves are in a secret store,
and a verifier of every signature a message carries.

`verify_all` checks RSA signatures with `dkim.verify` itself. dkimpy verifies Ed25519 only through
PyNaCl, which is not a dependency, so an Ed25519 signature is checked with dkimpy's own parsing,
canonicalization and header hashing (its public `verify_headerprep`, `CanonicalizationPolicy` and
`hash_headers`) and `cryptography`'s Ed25519 verification: the same steps as dkimpy's, with none of
Petrel's code in them.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import dkim
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import parse_tag_value

from petrel.mail.dkim import DkimKey
from petrel.models.records import DkimAlgorithm, DomainKey, KeyState
from petrel.ports import SecretStore

DnsFunc = Callable[..., bytes]


def private_pem(algorithm: DkimAlgorithm) -> str:
    """A new private key as PKCS#8 PEM (what the domains service stores): RSA-2048 or Ed25519."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    key = rsa.generate_private_key(65537, 2048) if algorithm == "rsa" else ed25519.Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def dkim_secret_name(tenant_id: str, domain: str, selector: str) -> str:
    """The agreed name of a DKIM private key's secret."""
    return f"petrel-test/tenants/{tenant_id}/dkim/{domain}/{selector}"


def new_key(
    secrets: SecretStore,
    tenant_id: str,
    domain: str,
    selector: str,
    *,
    algorithm: DkimAlgorithm = "rsa",
    state: KeyState = "active",
    at: datetime,
) -> tuple[DomainKey, str]:
    """A DomainKey whose private half is stored under its secret name; also returns the PEM."""
    pem = private_pem(algorithm)
    name = dkim_secret_name(tenant_id, domain, selector)
    secrets.put_secret(name, pem)
    public = DkimKey.load(pem).public_record().rsplit("p=", 1)[1]
    key = DomainKey(
        selector=selector, algorithm=algorithm, secret_name=name, public_key=public, state=state, created_at=at
    )
    return key, pem


def txt_value(key: DomainKey) -> str:
    """The TXT value published at `<selector>._domainkey.<domain>`."""
    kind = "rsa" if key.algorithm == "rsa" else "ed25519"
    return f"v=DKIM1; k={kind}; p={key.public_key}"


def serving(records: dict[str, str]) -> DnsFunc:
    """A dkimpy dnsfunc answering from `{"<selector>._domainkey.<domain>": value}` (no network)."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name.decode().rstrip(".").lower(), "").encode()

    return lookup


def published(domain: str, keys: Iterable[DomainKey]) -> dict[str, str]:
    return {f"{key.selector}._domainkey.{domain}": txt_value(key) for key in keys}


@dataclass(frozen=True)
class Verdict:
    algorithm: str
    domain: str
    selector: str
    valid: bool


def signature_count(message: bytes) -> int:
    return sum(1 for name, _ in dkim.DKIM(message).headers if name.lower() == b"dkim-signature")


def verify_all(message: bytes, dnsfunc: DnsFunc) -> list[Verdict]:
    """Every DKIM-Signature of `message`, top first, and whether it verifies against `dnsfunc`'s keys."""
    verdicts = []
    for index in range(signature_count(message)):
        checker = dkim.DKIM(message)
        prep = checker.verify_headerprep(index)
        assert prep, index
        sig, include, sigheaders = prep
        algorithm = sig[b"a"].decode()
        if algorithm == "rsa-sha256":
            try:
                valid = bool(checker.verify(idx=index, dnsfunc=dnsfunc))
            except dkim.DKIMException:  # as dkim.verify does: a failure, not an error
                valid = False
        else:
            valid = _verify_ed25519(checker, sig, include, sigheaders[index], dnsfunc)
        verdicts.append(Verdict(algorithm, sig[b"d"].decode(), sig[b"s"].decode(), valid))
    return verdicts


def _verify_ed25519(
    checker: dkim.DKIM,
    sig: dict[bytes, bytes],
    include: list[bytes],
    sigheader: tuple[bytes, bytes],
    dnsfunc: DnsFunc,
) -> bool:
    """RFC 8463: dkimpy's own steps (verify_sig_process), the public-key step in `cryptography`."""
    if sig[b"a"] != b"ed25519-sha256":
        return False
    policy = dkim.CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
    body_hash = hashlib.sha256(policy.canonicalize_body(checker.body)).digest()
    if body_hash != base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"])):
        return False
    names = list(include) + ([b"from"] if b"from" in include else [])  # as dkimpy does (its bug#644046)
    hasher = hashlib.sha256()
    dkim.hash_headers(hasher, policy, policy.canonicalize_headers(checker.headers), names, sigheader, sig)
    record = dnsfunc(sig[b"s"] + b"._domainkey." + sig[b"d"] + b".")
    if not record:
        return False
    public = parse_tag_value(record)
    if public.get(b"k") != b"ed25519":
        return False
    key = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(public[b"p"]))
    try:
        key.verify(base64.b64decode(re.sub(rb"\s+", b"", sig[b"b"])), hasher.digest())
    except InvalidSignature:
        return False
    return True
