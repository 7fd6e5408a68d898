"""The local stack's DNS server (Knot) end to end: the demo domain is verified from the start and its mail
arrives DKIM-signed with a signature that verifies against the key Knot serves; a new domain goes from
`POST /v1/domains` to verified after `petrel --env local dns publish`, and is refused before.

Invariants: a message from a verified Petrel-signed domain reaches the recipient with a DKIM-Signature
that `dkim.verify` accepts using the local DNS server (local.json `dns`); mail from a domain whose
records are not published is refused with a problem naming the record.
"""

from __future__ import annotations

import imaplib
import ssl
import time
import uuid
from email import message_from_bytes, policy
from typing import Any

import dkim
import pytest

from cli.main import main as petrel
from local.knot import resolver_at
from local.lambda_runtime import LocalContext
from local.platform import LocalPlatform
from tests.e2e.support.api import Api
from tests.support_dns import dkim_dnsfunc, txt_values

pytestmark = pytest.mark.e2e


def raw_messages(box: dict[str, Any], subject: str, timeout: float = 30.0) -> list[bytes]:
    """The messages with `subject` in the box's INBOX, as the bytes Dovecot stored (a signature is
    over those bytes: a parsed and re-serialised message may not verify)."""
    context = ssl.create_default_context(cafile=box["ca_file"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found: list[bytes] = []
        with imaplib.IMAP4_SSL(box["imap_host"], box["imap_port"], ssl_context=context) as imap:
            imap.login(box["username"], box["password"])
            imap.select("INBOX", readonly=True)
            _, data = imap.search(None, "ALL")
            for number in data[0].split():
                _, parts = imap.fetch(number, "(RFC822)")
                raw = parts[0][1] if parts and isinstance(parts[0], tuple) else b""
                if message_from_bytes(raw, policy=policy.default)["Subject"] == subject:
                    found.append(raw)
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"no message {subject!r} arrived in {box['address']}")


def test_the_demo_domain_is_verified_from_the_start(platform: LocalPlatform, api: Api) -> None:
    status, view = api.call("GET", f"/v1/domains/{platform.config.domain}")
    assert status == 200, view
    assert view["status"] == "verified", view
    required = [r for r in view["records"] if r["required"]]
    assert required and all(r["status"] == "verified" for r in required), required
    dns = platform.info["dns"]
    assert (dns["host"], dns["port"]) == (platform.dns.host, platform.dns.port)
    spf = txt_values(resolver_at(dns["host"], dns["port"]), platform.config.domain)
    assert [value for value in spf if value.startswith(b"v=spf1")] == [
        next(r["value"] for r in view["records"] if r["purpose"] == "spf").encode()
    ]


def test_demo_mail_arrives_with_a_dkim_signature_that_verifies_against_the_local_dns(
    platform: LocalPlatform, api: Api
) -> None:
    box = platform.info["test_mailbox"]
    subject = f"Signed {uuid.uuid4().hex[:8]}"
    status, sent = api.call(
        "POST",
        "/v1/emails",
        {"from": platform.info["from_address"], "to": [box["address"]], "subject": subject, "text": "Signed."},
    )
    assert status == 202, sent

    [raw] = raw_messages(box, subject)
    assert b"DKIM-Signature:" in raw
    dns = platform.info["dns"]
    lookup = dkim_dnsfunc(dns["host"], dns["port"])
    assert dkim.verify(raw, dnsfunc=lookup)
    tampered = raw.replace(b"Signed.", b"Forged.")
    assert tampered != raw and not dkim.verify(tampered, dnsfunc=lookup)


def test_dns_publish_takes_a_new_domain_from_pending_to_verified(
    platform: LocalPlatform, api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"new-{uuid.uuid4().hex[:8]}.test"
    status, created = api.call("POST", "/v1/domains", {"domain": name})
    assert status == 201, created
    assert created["status"] == "pending"

    status, refused = api.call(
        "POST",
        "/v1/emails",
        {"from": f"hello@{name}", "to": [platform.info["test_mailbox"]["address"]], "subject": "x", "text": "x"},
    )
    assert status == 422, refused
    assert refused["detail"] == f"the sending domain {name} is not verified"
    assert f"the SPF record (TXT {name})" in " ".join(e["detail"] for e in refused["errors"]), refused

    status, checked = api.call("POST", f"/v1/domains/{name}/verify")
    assert status == 200, checked
    assert checked["status"] != "verified"  # nothing published yet

    capsys.readouterr()
    assert petrel(["--workdir", str(platform.workdir), "dns", "publish", name]) == 0
    printed = capsys.readouterr()
    assert name in printed.out and "dkim" in printed.out, printed

    status, verified = api.call("POST", f"/v1/domains/{name}/verify")
    assert status == 200, verified
    assert verified["status"] == "verified", verified
    assert all(r["status"] == "verified" for r in verified["records"] if r["required"])


def test_the_local_domain_checker_fails_a_domain_whose_dkim_record_goes_and_restores_it(
    platform: LocalPlatform, api: Api
) -> None:
    """Drift as deployed: the domain checker (on the local timer; run once here) asks the local DNS server."""
    name = f"drift-{uuid.uuid4().hex[:8]}.test"
    status, created = api.call("POST", "/v1/domains", {"domain": name})
    assert status == 201, created
    assert petrel(["--workdir", str(platform.workdir), "dns", "publish", name]) == 0
    status, verified = api.call("POST", f"/v1/domains/{name}/verify")
    assert verified["status"] == "verified", verified
    dkim = next(r for r in verified["records"] if r["purpose"] == "dkim" and r["required"])
    checker = platform.running().domain_checker.handler

    platform.dns.remove(dkim["name"], "TXT")
    checker({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, LocalContext("domain-checker"))
    status, failed = api.call("GET", f"/v1/domains/{name}")
    assert status == 200 and failed["status"] == "failed", failed
    assert not failed["sending_allowed"]
    assert failed["events"][-1]["type"] == "domain.dns_error" and dkim["name"] in failed["events"][-1]["detail"]
    status, demo = api.call("GET", f"/v1/domains/{platform.config.domain}")
    assert demo["status"] == "verified", demo  # the others' records are where they were

    assert petrel(["--workdir", str(platform.workdir), "dns", "publish", name]) == 0
    checker({"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}, LocalContext("domain-checker"))
    status, again = api.call("GET", f"/v1/domains/{name}")
    assert again["status"] == "verified", again
    assert [e["type"] for e in again["events"]][-3:] == ["domain.verified", "domain.dns_error", "domain.verified"]
