"""DKIM signing in the send path: one DKIM-Signature per active key of the sender's domain.

Invariant: a message from a domain whose signing is Petrel's leaves the worker carrying exactly one
signature per active key (RSA first, then Ed25519, RFC 8463 recommends both), made over the exact bytes
relayed, or it does not leave at all: every failure is a value (`SigningDeferred`) that the worker turns
into a soft failure, so the message is retried, never sent unsigned. The stored body is never changed:
each attempt signs it afresh, so retries never stack signatures.

Why keys are cached here: parsing a PEM costs more than the signature itself (about 1 ms against
0.5 ms for RSA-2048). A loaded key is kept under its secret name together with the PEM it came from, so
a secret whose value is replaced (restored after a broken write) is loaded again, and the value itself
comes through the worker's caching SecretStore (its TTL is how long an operator's change may take).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from petrel.mail import dkim
from petrel.mail.dkim import DkimError, DkimKey
from petrel.models.records import DkimSigner, DomainKey, SendingDomain
from petrel.ports import Clock, SecretStore

KEY_UNAVAILABLE = "dkim-key-unavailable"  # the secret is missing, unreadable or not a usable key
SIGNING_ERROR = "dkim-error"  # the message cannot be signed (no From field, a non-ASCII domain ...)

# Loaded keys kept per warm worker: far more than the domains one worker signs for in a few minutes.
DEFAULT_MAX_KEYS = 256
# The order of the signatures a message carries: the RSA one (which every receiver checks) on top.
_ALGORITHM_ORDER = {"rsa": 0, "ed25519": 1}


class ForgettingSecretStore(SecretStore, Protocol):
    """The worker's caching SecretStore: a value that is not a usable key is dropped from its cache, so
    the next attempt reads the secret afresh (the operator may have fixed it)."""

    def forget_secret(self, name: str) -> None: ...


@dataclass(frozen=True)
class Signed:
    """The bytes to relay: the DKIM-Signature fields, then the message as stored. `selectors` are the
    keys that signed, in field order; () when Petrel does not sign the domain (bytes unchanged)."""

    message: bytes
    selectors: tuple[str, ...] = ()


@dataclass(frozen=True)
class SigningDeferred:
    """The message cannot be signed now: `reason` is `dkim-key-unavailable` or `dkim-error`; `detail`
    names what failed without any key material."""

    reason: str
    detail: str


class MessageSigner:
    """Signs outgoing messages with their domain's active keys, read from the secret store.

    Thread-safe: the local stack runs a function's invocations on threads that share one container.
    """

    def __init__(self, secrets: ForgettingSecretStore, clock: Clock, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._secrets = secrets
        self._clock = clock
        self._max_keys = max_keys
        self._keys: OrderedDict[str, tuple[str, DkimKey]] = OrderedDict()
        self._lock = threading.Lock()

    def sign(self, raw: bytes, domain: SendingDomain) -> Signed | SigningDeferred:
        """`raw` with one DKIM-Signature per signing key of `domain` prepended (t= the clock's now), or
        why it cannot be signed. A domain MailU signs, or one without keys, is returned unchanged."""
        keys = sorted(domain.signing_keys, key=lambda k: _ALGORITHM_ORDER.get(k.algorithm, len(_ALGORITHM_ORDER)))
        if domain.signer is not DkimSigner.PETREL or not keys:
            return Signed(raw)
        loaded: list[tuple[DomainKey, DkimKey]] = []
        for key in keys:
            found = self.load_key(key)
            if isinstance(found, SigningDeferred):
                return found
            loaded.append((key, found))
        try:
            fields, body = dkim.parse(raw)
            names = dkim.signed_header_list(fields, dkim.SIGNED_HEADERS)
            timestamp = int(self._clock.now().timestamp())
            signatures = [
                dkim.sign_fields(
                    fields, body, names, selector=key.selector, domain=domain.domain, key=private, timestamp=timestamp
                )
                for key, private in loaded
            ]
        except DkimError as error:
            return SigningDeferred(SIGNING_ERROR, f"the message cannot be signed: {error}")
        return Signed(b"".join(signatures) + raw, tuple(key.selector for key, _ in loaded))

    def load_key(self, key: DomainKey) -> DkimKey | SigningDeferred:
        """The private key of `key`, loaded once per PEM; a deferral when it cannot be had."""
        name = key.secret_name
        if not name:
            return SigningDeferred(KEY_UNAVAILABLE, f"DKIM key {key.selector!r} has no secret")
        try:
            pem = self._secrets.get_secret(name)
        except Exception as error:  # missing, or the store is down: the message waits for it
            return SigningDeferred(KEY_UNAVAILABLE, f"DKIM key {key.selector!r} unavailable: {type(error).__name__}")
        with self._lock:
            cached = self._keys.get(name)
            if cached is not None and cached[0] == pem:
                self._keys.move_to_end(name)
                return cached[1]
        try:
            loaded = DkimKey.load(pem)
        except DkimError:  # its text may quote the value: never logged or stored
            self._secrets.forget_secret(name)
            return SigningDeferred(KEY_UNAVAILABLE, f"DKIM key {key.selector!r} is not a usable private key")
        expected = "rsa-sha256" if key.algorithm == "rsa" else "ed25519-sha256"
        if loaded.algorithm != expected:
            self._secrets.forget_secret(name)
            return SigningDeferred(KEY_UNAVAILABLE, f"DKIM key {key.selector!r} is not an {key.algorithm} key")
        with self._lock:
            self._keys[name] = (pem, loaded)
            self._keys.move_to_end(name)
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        return loaded

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)
