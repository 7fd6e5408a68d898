"""The pure record logic: the exact values a tenant publishes, and each check's verdict."""

from __future__ import annotations

import pytest

from petrel.mail import dnsauth
from petrel.models.records import DkimSigner, DomainKey, SendingDomain
from tests.fakes.clock import DEFAULT_START


def _domain(**fields: object) -> SendingDomain:
    values: dict[str, object] = {
        "tenant_id": "tn_a",
        "domain": "acme.test",
        "return_path_domain": "acme.test",
        "created_at": DEFAULT_START,
        "spf": ("a:mail.acme.test",),
        "mx": ("mail.acme.test",),
        "dmarc_rua": "mailto:dmarc@acme.test",
        "keys": (DomainKey(selector="s1", public_key="QUJD", secret_name="x", created_at=DEFAULT_START),),
    }
    values.update(fields)
    return SendingDomain.model_validate(values)


def _by(records: tuple[object, ...]) -> dict[tuple[str, str], object]:
    return {(r.purpose, r.name): r for r in records}  # type: ignore[attr-defined]


def test_expected_records_have_the_exact_values_a_tenant_publishes() -> None:
    records = dnsauth.expected_records(_domain())
    got = [(r.purpose, r.type, r.name, r.value, r.required) for r in records]
    assert got == [
        ("spf", "TXT", "acme.test", "v=spf1 a:mail.acme.test ~all", True),
        ("dkim", "TXT", "s1._domainkey.acme.test", "v=DKIM1; k=rsa; p=QUJD", True),
        (
            "dmarc",
            "TXT",
            "_dmarc.acme.test",
            "v=DMARC1; p=quarantine; rua=mailto:dmarc@acme.test; adkim=r; aspf=r",
            False,
        ),
        ("return_path_mx", "MX", "acme.test", "10 mail.acme.test.", False),
    ]


def test_a_separate_return_path_gets_its_own_spf_and_mx_and_a_receiving_domain_its_mx() -> None:
    records = dnsauth.expected_records(_domain(return_path_domain="bounce.acme.test", receives=True))
    got = {(r.purpose, r.name, r.value, r.required) for r in records}
    assert ("return_path_spf", "bounce.acme.test", "v=spf1 a:mail.acme.test ~all", True) in got
    assert ("return_path_mx", "bounce.acme.test", "10 mail.acme.test.", False) in got
    assert ("mx", "acme.test", "10 mail.acme.test.", False) in got


def test_only_active_keys_are_required_and_an_ed25519_key_says_so() -> None:
    keys = (
        DomainKey(selector="old", public_key="T0xE", state="retired", created_at=DEFAULT_START),
        DomainKey(selector="cur", public_key="Q1VS", created_at=DEFAULT_START),
        DomainKey(selector="cure", algorithm="ed25519", public_key="RUQ=", created_at=DEFAULT_START),
        DomainKey(selector="nxt", public_key="TlhU", state="next", created_at=DEFAULT_START),
    )
    dkim = {r.selector: r for r in dnsauth.expected_records(_domain(keys=keys)) if r.purpose == "dkim"}
    assert {s: r.required for s, r in dkim.items()} == {"old": False, "cur": True, "cure": True, "nxt": False}
    assert dkim["cure"].value == "v=DKIM1; k=ed25519; p=RUQ="


def test_a_mailu_key_not_yet_seen_asks_for_what_mailu_shows() -> None:
    keys = (DomainKey(selector="dkim", created_at=DEFAULT_START),)
    (dkim,) = [r for r in dnsauth.expected_records(_domain(signer=DkimSigner.MAILU, keys=keys)) if r.purpose == "dkim"]
    assert dkim.name == "dkim._domainkey.acme.test" and "MailU" in dkim.value and dkim.required


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("include:_spf.Mail.test", "include:_spf.mail.test"),
        ("a", "a"),
        ("a:mx1.acme.test.", "a:mx1.acme.test"),
        ("mx", "mx"),
        ("ip4:192.0.2.7", "ip4:192.0.2.7"),
        ("ip4:192.0.2.0/24", "ip4:192.0.2.0/24"),
        ("ip6:2001:db8::/32", "ip6:2001:db8::/32"),
    ],
)
def test_spf_mechanisms_are_normalized(given: str, normal: str) -> None:
    assert dnsauth.check_spf_mechanism(given) == normal


@pytest.mark.parametrize("bad", ["all", "+all", "ip4:300.1.1.1", "ip4:2001:db8::1", "include:", "exists:x.test", "ptr"])
def test_spf_mechanisms_petrel_does_not_publish_are_refused(bad: str) -> None:
    with pytest.raises(dnsauth.RecordError):
        dnsauth.check_spf_mechanism(bad)


@pytest.mark.parametrize("bad", ["localhost", "-a.test", "a..test", "a_b.test", "x" * 64 + ".test", "1.2.3.4"])
def test_host_names_are_checked(bad: str) -> None:
    with pytest.raises(dnsauth.RecordError):
        dnsauth.check_hostname(bad)


def _zone(**records: list[str]) -> dnsauth.Fetch:
    zone = {name.replace("_", "."): values for name, values in records.items()}
    return lambda name: zone.get(name, [])


def test_spf_verified_directly_and_through_an_include() -> None:
    want = ("a:mail.acme.test",)
    assert dnsauth.check_spf(["v=spf1 a:mail.acme.test -all"], want, _zone()).status == "verified"
    fetch = _zone(spf_provider_test=["v=spf1 a:mail.acme.test ~all"])
    assert dnsauth.check_spf(["v=spf1 include:spf.provider.test ~all"], want, fetch).status == "verified"


def test_spf_missing_wrong_and_plus_all() -> None:
    want = ("a:mail.acme.test",)
    assert dnsauth.check_spf(["google-site-verification=x"], want, _zone()).status == "missing"
    wrong = dnsauth.check_spf(["v=spf1 a:other.test ~all"], want, _zone())
    assert wrong.status == "wrong" and wrong.found == ("v=spf1 a:other.test ~all",)
    assert "a:mail.acme.test" in (wrong.detail or "")
    everyone = dnsauth.check_spf(["v=spf1 a:mail.acme.test +all"], want, _zone())
    assert everyone.status == "wrong" and "+all" in (everyone.detail or "")
    assert dnsauth.check_spf(["v=spf1 a:mail.acme.test all"], want, _zone()).status == "wrong"
    # a qualifier other than + does not authorize
    assert dnsauth.check_spf(["v=spf1 ~a:mail.acme.test -all"], want, _zone()).status == "wrong"


def test_two_spf_records_are_a_warning() -> None:
    found = dnsauth.check_spf(["v=spf1 a:mail.acme.test ~all", "v=spf1 mx ~all"], ("a:mail.acme.test",), _zone())
    assert found.status == "warning" and "permerror" in (found.detail or "") and len(found.found) == 2


def test_spf_lookups_are_counted_through_includes() -> None:
    # the record: 1 include -> chain of includes, each with an `a` and an `mx` (3 per level)
    zone: dict[str, list[str]] = {}
    for level in range(4):
        nxt = f" include:l{level + 1}.test" if level < 3 else ""
        zone[f"l{level}.test"] = [f"v=spf1 a mx{nxt} ~all"]
    record = "v=spf1 a:mail.acme.test include:l0.test ~all"
    assert dnsauth.count_spf_lookups(record, lambda n: zone.get(n, [])) > dnsauth.SPF_LOOKUP_LIMIT
    over = dnsauth.check_spf([record], ("a:mail.acme.test",), lambda n: zone.get(n, []))
    assert over.status == "warning" and "10 DNS lookups" in (over.detail or "")
    zone["l2.test"] = ["v=spf1 a ~all"]
    assert dnsauth.count_spf_lookups(record, lambda n: zone.get(n, [])) == 2 + 3 + 3 + 1
    assert dnsauth.check_spf([record], ("a:mail.acme.test",), lambda n: zone.get(n, [])).status == "verified"


def test_an_include_loop_ends() -> None:
    zone = {"x.test": ["v=spf1 include:y.test ~all"], "y.test": ["v=spf1 include:x.test ~all"]}
    found = dnsauth.check_spf(["v=spf1 include:x.test ~all"], ("include:x.test",), lambda n: zone.get(n, []))
    assert found.status == "warning"


def test_dkim_checks() -> None:
    assert dnsauth.check_dkim([], "QUJD").status == "missing"
    assert dnsauth.check_dkim(["v=DKIM1; k=rsa; p=QU JD"], "QUJD").status == "verified"
    other = dnsauth.check_dkim(["v=DKIM1; k=rsa; p=T1RI"], "QUJD")
    assert other.status == "wrong" and other.found == ("v=DKIM1; k=rsa; p=T1RI",)
    assert dnsauth.check_dkim(["v=DKIM1; p="], None).status == "wrong"  # a revoked key
    mailu = dnsauth.check_dkim(["v=DKIM1; k=rsa; p=T1RI"], None)
    assert mailu.status == "verified" and mailu.found == ("T1RI",)


def test_dmarc_checks() -> None:
    assert dnsauth.check_dmarc([]).status == "missing"
    assert dnsauth.check_dmarc(["v=DMARC1; p=reject"]).status == "verified"
    none = dnsauth.check_dmarc(["v=DMARC1; p=none; rua=mailto:x@acme.test"])
    assert none.status == "warning" and "p=none" in (none.detail or "")
    assert dnsauth.check_dmarc(["v=DMARC1; rua=mailto:x@y.test"]).status == "wrong"
    assert dnsauth.check_dmarc(["v=DMARC1; p=reject", "v=DMARC1; p=none"]).status == "wrong"


def test_mx_checks() -> None:
    assert dnsauth.check_mx([], "mail.acme.test").status == "missing"
    assert dnsauth.check_mx([(5, "mail.acme.test"), (10, "b.test")], "mail.acme.test").status == "verified"
    wrong = dnsauth.check_mx([(10, "other.test")], "mail.acme.test")
    assert wrong.status == "wrong" and wrong.found == ("10 other.test.",)
