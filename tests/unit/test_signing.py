"""services.signing.MessageSigner: one verifiable DKIM-Signature per active key, or a deferral value.

Invariant: for a domain Petrel signs, `sign` returns either the message with exactly one signature per
active key (RSA on top, then Ed25519), each verifying against the published key and each the bytes the
pure signer makes for the same key, message and t=, or a `SigningDeferred` naming why; never the
message unsigned, never an exception. A domain MailU signs, or one without keys, comes back unchanged.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from petrel.adapters.caching import CachingSecretStore
from petrel.mail import dkim as petrel_dkim
from petrel.mail.dkim import DkimKey
from petrel.models.records import DkimSigner, DomainKey, DomainStatus, SendingDomain
from petrel.services.signing import KEY_UNAVAILABLE, SIGNING_ERROR, MessageSigner, Signed, SigningDeferred
from tests.fakes import FakeSecretStore, FixedClock
from tests.support_dkim import new_key, private_pem, published, serving, signature_count, verify_all

TENANT = "tn_signing"
DOMAIN = "example.com"
MESSAGE = (
    b"From: Ana <ana@example.com>\r\nTo: bo@example.org\r\nSubject: Your order\r\n"
    b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nIt ships today.\r\n"
)
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _domain(*keys: DomainKey, signer: DkimSigner = DkimSigner.PETREL) -> SendingDomain:
    return SendingDomain(
        tenant_id=TENANT,
        domain=DOMAIN,
        return_path_domain=DOMAIN,
        created_at=AT,
        status=DomainStatus.VERIFIED,
        signer=signer,
        keys=keys,
    )


def _signed(result: Signed | SigningDeferred) -> Signed:
    assert isinstance(result, Signed), result
    return result


def _deferred(result: Signed | SigningDeferred) -> SigningDeferred:
    assert isinstance(result, SigningDeferred), result
    return result


@pytest.fixture
def secrets() -> FakeSecretStore:
    return FakeSecretStore()


@pytest.fixture
def cached(secrets: FakeSecretStore) -> CachingSecretStore:
    """The worker's view of the secrets: cached far longer than any test runs."""
    return CachingSecretStore(secrets, ttl=3600)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(AT)


def test_rsa_signature_is_dkimpys_own_bytes_and_verifies(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    key, pem = new_key(secrets, TENANT, DOMAIN, "s2026", at=AT)
    fields, _ = petrel_dkim.parse(MESSAGE)
    names = petrel_dkim.signed_header_list(fields, petrel_dkim.SIGNED_HEADERS)
    traditional = DkimKey.load(pem).key.private_bytes(  # the PKCS#1 form dkimpy reads
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    expected = dkim.sign(
        MESSAGE,
        b"s2026",
        DOMAIN.encode(),
        traditional,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[n.encode() for n in names],
    )
    found = re.search(rb"[; ]t=(\d+);", expected)
    assert found is not None
    clock.set(datetime.fromtimestamp(int(found.group(1)), UTC))

    signed = _signed(MessageSigner(cached, clock).sign(MESSAGE, _domain(key)))

    assert signed.message == expected + MESSAGE
    assert signed.selectors == ("s2026",)
    assert names.count("from") == 2  # From over-signed
    assert dkim.verify(signed.message, dnsfunc=serving(published(DOMAIN, [key])))


def test_rsa_and_ed25519_each_sign_once_rsa_on_top(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    ed, ed_pem = new_key(secrets, TENANT, DOMAIN, "ed2026", algorithm="ed25519", at=AT)
    rsa, rsa_pem = new_key(secrets, TENANT, DOMAIN, "rsa2026", at=AT)

    signed = _signed(MessageSigner(cached, clock).sign(MESSAGE, _domain(ed, rsa)))  # stored Ed25519 first

    verdicts = verify_all(signed.message, serving(published(DOMAIN, [ed, rsa])))
    assert [(v.algorithm, v.selector, v.valid) for v in verdicts] == [
        ("rsa-sha256", "rsa2026", True),
        ("ed25519-sha256", "ed2026", True),
    ]
    tampered = verify_all(signed.message.replace(b"ships today", b"ships never"), serving(published(DOMAIN, [ed, rsa])))
    assert [v.valid for v in tampered] == [False, False]
    assert signed.selectors == ("rsa2026", "ed2026")
    t = int(clock.now().timestamp())
    expected = b"".join(
        petrel_dkim.sign(MESSAGE, selector=s, domain=DOMAIN, private_key=pem, timestamp=t)
        for s, pem in (("rsa2026", rsa_pem), ("ed2026", ed_pem))
    )
    assert signed.message == expected + MESSAGE


def test_a_signature_does_not_verify_against_another_key(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    other, _ = new_key(secrets, TENANT, DOMAIN, "s1", at=AT)  # published at the selector ...
    key, _ = new_key(secrets, TENANT, DOMAIN, "s1", at=AT)  # ... but the secret now holds another key
    signed = _signed(MessageSigner(cached, clock).sign(MESSAGE, _domain(key)))
    assert not dkim.verify(signed.message, dnsfunc=serving(published(DOMAIN, [other])))


def test_only_active_keys_sign(secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock) -> None:
    old, _ = new_key(secrets, TENANT, DOMAIN, "old", state="retired", at=AT)
    new, _ = new_key(secrets, TENANT, DOMAIN, "new", state="next", at=AT)
    now, _ = new_key(secrets, TENANT, DOMAIN, "now", at=AT)

    signed = _signed(MessageSigner(cached, clock).sign(MESSAGE, _domain(old, new, now)))

    assert signed.selectors == ("now",) and signature_count(signed.message) == 1


@pytest.mark.parametrize(
    "domain",
    [
        pytest.param(_domain(signer=DkimSigner.MAILU), id="mailu signs"),
        pytest.param(_domain(), id="no keys (an older record)"),
    ],
)
def test_a_domain_petrel_does_not_sign_is_unchanged(
    cached: CachingSecretStore, clock: FixedClock, domain: SendingDomain
) -> None:
    assert MessageSigner(cached, clock).sign(MESSAGE, domain) == Signed(MESSAGE, ())


def test_a_mailu_domain_with_a_key_record_is_not_signed(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    key, _ = new_key(secrets, TENANT, DOMAIN, "mailu", at=AT)
    domain = _domain(key.model_copy(update={"secret_name": None}), signer=DkimSigner.MAILU)
    assert MessageSigner(cached, clock).sign(MESSAGE, domain) == Signed(MESSAGE, ())


def test_a_missing_secret_defers_and_a_restored_one_signs(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    key, pem = new_key(secrets, TENANT, DOMAIN, "s1", at=AT)
    name = key.secret_name or ""
    secrets.delete_secret(name)
    signer = MessageSigner(cached, clock)

    deferred = _deferred(signer.sign(MESSAGE, _domain(key)))
    assert deferred.reason == KEY_UNAVAILABLE and "RecordNotFound" in deferred.detail

    secrets.put_secret(name, pem)
    signed = _signed(signer.sign(MESSAGE, _domain(key)))
    assert dkim.verify(signed.message, dnsfunc=serving(published(DOMAIN, [key])))


def test_an_unreachable_secret_store_defers(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    key, _ = new_key(secrets, TENANT, DOMAIN, "s1", at=AT)
    secrets.down = True
    assert _deferred(MessageSigner(cached, clock).sign(MESSAGE, _domain(key))).reason == KEY_UNAVAILABLE


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", id="garbage PEM"),
        pytest.param("", id="empty"),
        pytest.param(private_pem("ed25519"), id="an Ed25519 key where RSA is recorded"),
    ],
)
def test_an_unusable_key_defers_without_quoting_it_then_a_fixed_secret_signs(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock, value: str
) -> None:
    key, pem = new_key(secrets, TENANT, DOMAIN, "s1", at=AT)
    name = key.secret_name or ""
    secrets.put_secret(name, value)
    signer = MessageSigner(cached, clock)

    deferred = _deferred(signer.sign(MESSAGE, _domain(key)))
    assert deferred.reason == KEY_UNAVAILABLE
    assert "bm90IGEga2V5" not in deferred.detail and "PRIVATE" not in deferred.detail

    secrets.put_secret(name, pem)  # fixed in Secrets Manager, behind the worker's hour-long cache
    signed = _signed(signer.sign(MESSAGE, _domain(key)))
    assert dkim.verify(signed.message, dnsfunc=serving(published(DOMAIN, [key])))


def test_one_unusable_key_of_two_defers_the_message(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    """Both signatures or none: half-signed mail would hide a broken key until the RSA one breaks too."""
    rsa, _ = new_key(secrets, TENANT, DOMAIN, "rsa", at=AT)
    ed, _ = new_key(secrets, TENANT, DOMAIN, "ed", algorithm="ed25519", at=AT)
    secrets.delete_secret(ed.secret_name or "")
    assert _deferred(MessageSigner(cached, clock).sign(MESSAGE, _domain(rsa, ed))).reason == KEY_UNAVAILABLE


def test_a_message_that_cannot_be_signed_is_a_dkim_error(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    key, _ = new_key(secrets, TENANT, DOMAIN, "s1", at=AT)
    no_from = b"To: bo@example.org\r\nSubject: s\r\n\r\nx\r\n"
    deferred = _deferred(MessageSigner(cached, clock).sign(no_from, _domain(key)))
    assert deferred.reason == SIGNING_ERROR and "From" in deferred.detail


def test_a_key_is_parsed_once_per_pem_and_again_when_the_secret_changes(
    secrets: FakeSecretStore, cached: CachingSecretStore, clock: FixedClock
) -> None:
    key, _ = new_key(secrets, TENANT, DOMAIN, "s1", at=AT)
    signer = MessageSigner(secrets, clock)  # uncached store: every read sees the current value

    first = signer.load_key(key)
    assert signer.load_key(key) is first

    secrets.put_secret(key.secret_name or "", private_pem("rsa"))
    second = signer.load_key(key)
    assert isinstance(second, DkimKey) and second is not first and len(signer) == 1


def test_the_key_cache_is_bounded(secrets: FakeSecretStore, clock: FixedClock) -> None:
    signer = MessageSigner(secrets, clock, max_keys=2)
    keys = [new_key(secrets, TENANT, DOMAIN, f"s{i}", algorithm="ed25519", at=AT)[0] for i in range(3)]
    loaded = [signer.load_key(k) for k in keys]
    assert all(isinstance(k, DkimKey) for k in loaded) and len(signer) == 2
    assert signer.load_key(keys[2]) is loaded[2]  # the most recent ones stay
