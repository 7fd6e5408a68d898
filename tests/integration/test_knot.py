"""The real DNS server of the tests and the local stack (local/knot.py: Debian's knotd on a loopback port).

Invariants:
- after `publish(name, type, values)` returns, a lookup of (name, type) answers exactly `values` (a TXT
  value longer than 255 octets comes back as several character-strings that join to it); after
  `remove`, nothing; `publish` replaces, never appends;
- only the holder of the server's TSIG key changes a zone (an unsigned update is refused);
- a restarted server serves nothing that was published before the restart;
- a DKIM key published with `DkimKey.public_record()` verifies a signature of `petrel.mail.dkim.sign`
  with dkimpy's `dkim.verify` asking this server.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.update
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from local.knot import KnotClient, KnotError, KnotServer, txt_strings
from petrel.mail.dkim import DkimKey, sign
from tests.support_dns import dkim_dnsfunc, txt_values, unique_zone

pytestmark = pytest.mark.integration

MESSAGE = (
    b"From: Ana <ana@{domain}>\r\nTo: bo@example.org\r\nSubject: Your order\r\n"
    b"Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMessage-ID: <1@{domain}>\r\n\r\nIt ships today.\r\n"
)


@pytest.fixture
def zone(dns_server: KnotServer) -> str:
    name = unique_zone()
    dns_server.add_zone(name)
    return name


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[KnotServer]:
    """A server of this test's own (the ones that stop and restart it)."""
    server = KnotServer(tmp_path / "knot")
    yield server
    server.stop()


def mx_values(resolver: dns.resolver.Resolver, name: str) -> list[tuple[int, str]]:
    try:
        answer = resolver.resolve(name, dns.rdatatype.MX)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    return sorted((rdata.preference, rdata.exchange.to_text()) for rdata in answer)


def test_start_answers_and_stop_silences(own_server: KnotServer) -> None:
    own_server.start()
    assert own_server.running and own_server.port > 0
    port = own_server.port
    response = dns.query.udp(dns.message.make_query(".", dns.rdatatype.SOA), own_server.host, port=port, timeout=2)
    assert response.rcode() == dns.rcode.REFUSED  # it answers, and is authoritative for nothing yet

    own_server.stop()
    assert not own_server.running
    with pytest.raises((OSError, dns.exception.DNSException)):
        dns.query.tcp(dns.message.make_query(".", dns.rdatatype.SOA), own_server.host, port=port, timeout=1)
    own_server.stop()  # a second stop does nothing


def test_an_added_zone_serves_its_soa_and_adding_it_again_changes_nothing(dns_server: KnotServer) -> None:
    name = unique_zone()
    dns_server.add_zone(name)
    dns_server.publish(f"x.{name}", "TXT", ["kept"])
    dns_server.add_zone(name + ".")  # idempotent, with or without the final dot

    resolver = dns_server.resolver()
    soa = resolver.resolve(name, dns.rdatatype.SOA)
    assert soa.rrset is not None and soa.rrset.name.to_text() == f"{name}."
    assert txt_values(resolver, f"x.{name}") == [b"kept"]
    assert name in dns_server.zones


def test_publish_replaces_and_remove_deletes_a_txt_rrset(dns_server: KnotServer, zone: str) -> None:
    resolver = dns_server.resolver()
    name = f"_dmarc.{zone}"
    dns_server.publish(name, "TXT", ["v=DMARC1; p=none", "second"])
    assert txt_values(resolver, name) == [b"second", b"v=DMARC1; p=none"]

    dns_server.publish(name, "TXT", ["v=DMARC1; p=quarantine"])
    assert txt_values(resolver, name) == [b"v=DMARC1; p=quarantine"]

    dns_server.remove(name, "TXT")
    assert txt_values(resolver, name) == []
    dns_server.remove(name, "TXT")  # removing what is not there is no error


def test_publish_replaces_and_remove_deletes_an_mx_rrset(dns_server: KnotServer, zone: str) -> None:
    resolver = dns_server.resolver()
    dns_server.publish(zone, "MX", ["10 mx1.example.net.", "20 mx2.example.net"])
    assert mx_values(resolver, zone) == [(10, "mx1.example.net."), (20, "mx2.example.net.")]

    dns_server.publish(zone, "MX", ["5 mail.example.org."])
    assert mx_values(resolver, zone) == [(5, "mail.example.org.")]

    dns_server.remove(zone, "MX")
    assert mx_values(resolver, zone) == []
    assert resolver.resolve(zone, dns.rdatatype.SOA).rrset is not None  # the zone itself stays


def test_a_410_octet_txt_value_is_split_into_strings_that_join_back(dns_server: KnotServer, zone: str) -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 392
    assert len(value) == 410
    name = f"s1._domainkey.{zone}"
    dns_server.publish(name, "TXT", [value])

    answer = dns_server.resolver().resolve(name, dns.rdatatype.TXT)
    (rdata,) = list(answer)
    assert [len(part) for part in rdata.strings] == [255, 155]
    assert b"".join(rdata.strings) == value.encode()
    assert txt_strings("") == [b""] and txt_strings("x" * 255) == [b"x" * 255]


def test_a_name_outside_every_zone_is_refused_before_sending(dns_server: KnotServer) -> None:
    with pytest.raises(KnotError, match="in no zone"):
        dns_server.publish(f"x.{unique_zone()}", "TXT", ["nowhere"])


def test_a_name_goes_to_the_longest_matching_zone(dns_server: KnotServer) -> None:
    parent = unique_zone()
    child = f"sub.{parent}"
    dns_server.add_zone(parent)
    dns_server.add_zone(child)
    assert dns_server.zone_for(f"a.{child}") == child
    assert dns_server.zone_for(f"a.{parent}") == parent

    resolver = dns_server.resolver()

    def serial(zone: str) -> int:
        return int(resolver.resolve(zone, dns.rdatatype.SOA)[0].serial)

    before = serial(parent), serial(child)
    dns_server.publish(f"a.{child}", "TXT", ["in the child"])
    assert txt_values(resolver, f"a.{child}") == [b"in the child"]
    assert (serial(parent), serial(child)) == (before[0], before[1] + 1)  # the update went to the child


def test_an_unsigned_update_is_refused(dns_server: KnotServer, zone: str) -> None:
    update = dns.update.UpdateMessage(zone)
    update.replace(f"evil.{zone}", 60, "TXT", '"not yours"')
    response = dns.query.tcp(update, dns_server.host, port=dns_server.port, timeout=2)
    assert response.rcode() != dns.rcode.NOERROR
    assert txt_values(dns_server.resolver(), f"evil.{zone}") == []


def test_concurrent_publishes_to_two_zones_all_land(dns_server: KnotServer) -> None:
    zones = [unique_zone("a"), unique_zone("b")]
    for name in zones:
        dns_server.add_zone(name)
    errors: list[BaseException] = []

    def publish_many(zone: str) -> None:
        try:
            for i in range(40):
                dns_server.publish(f"r{i}.{zone}", "TXT", [f"{zone}-{i}"])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=publish_many, args=(name,)) for name in zones for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    resolver = dns_server.resolver()
    for name in zones:
        for i in range(40):
            assert txt_values(resolver, f"r{i}.{name}") == [f"{name}-{i}".encode()]


def test_concurrent_zone_additions_all_serve(dns_server: KnotServer) -> None:
    names = [unique_zone("c") for _ in range(6)]
    threads = [threading.Thread(target=dns_server.add_zone, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    resolver = dns_server.resolver()
    for name in names:
        assert resolver.resolve(name, dns.rdatatype.SOA).rrset is not None


def test_a_restart_serves_nothing_published_before(own_server: KnotServer) -> None:
    own_server.start()
    old_client = KnotClient.from_info(own_server.info())
    name = unique_zone()
    own_server.add_zone(name)
    own_server.publish(f"old.{name}", "TXT", ["stale"])
    own_server.publish(name, "MX", ["10 old.example.net."])
    own_server.stop()
    assert not own_server.running

    own_server.start()
    assert own_server.zones == ()
    with pytest.raises(KnotError, match="in no zone"):
        own_server.publish(f"old.{name}", "TXT", ["again"])  # the zone itself is gone until added again
    own_server.add_zone(name)
    resolver = own_server.resolver()
    assert txt_values(resolver, f"old.{name}") == []
    assert mx_values(resolver, name) == []

    old_client.port = own_server.port  # the key of the run before, at this run's address: refused
    with pytest.raises(KnotError, match="refused the key"):
        old_client.publish(f"old.{name}", "TXT", ["with the old key"])
    assert txt_values(resolver, f"old.{name}") == []


def test_publish_all_sends_one_update_per_zone(dns_server: KnotServer) -> None:
    first, second = unique_zone("p"), unique_zone("q")
    dns_server.add_zone(first)
    dns_server.add_zone(second)
    resolver = dns_server.resolver()

    def serial(zone: str) -> int:
        return int(resolver.resolve(zone, dns.rdatatype.SOA)[0].serial)

    before = serial(first), serial(second)
    dns_server.publish_all(
        [
            (first, "TXT", ["v=spf1 a -all"]),
            (f"_dmarc.{first}", "TXT", ["v=DMARC1; p=reject"]),
            (first, "MX", ["10 mx.example.net."]),
            (f"x.{second}", "TXT", ["other"]),
        ]
    )
    assert (serial(first), serial(second)) == (before[0] + 1, before[1] + 1)  # one change each
    assert txt_values(resolver, first) == [b"v=spf1 a -all"]
    assert txt_values(resolver, f"_dmarc.{first}") == [b"v=DMARC1; p=reject"]
    assert mx_values(resolver, first) == [(10, "mx.example.net.")]
    assert txt_values(resolver, f"x.{second}") == [b"other"]


def test_a_client_built_from_the_servers_info_changes_its_zones(dns_server: KnotServer) -> None:
    """What another process (the `petrel dns` CLI) does with local.json's `dns`."""
    other = KnotClient.from_info(dns_server.info())
    name = unique_zone()
    assert other.add_zone(name) is True
    assert dns_server.add_zone(name) is False  # the server's own client sees it served already
    other.publish(f"k.{name}", "TXT", ["from elsewhere"])
    assert dns_server.zone_for(f"k.{name}") == name
    assert txt_values(dns_server.resolver(), f"k.{name}") == [b"from elsewhere"]
    with pytest.raises(KnotError, match="lacks 'tsig_secret'"):
        KnotClient.from_info({"host": "127.0.0.1", "port": 53})


def test_a_failed_start_reports_the_log_tail_and_leaves_nothing_running(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: knotd starts but never answers there.
    server = KnotServer(tmp_path / "unreachable", host="192.0.2.1", port=53999, start_timeout=1.5)
    with pytest.raises(KnotError) as raised:
        server.start()
    assert "did not answer" in str(raised.value) or "exited while starting" in str(raised.value)
    assert "192.0.2.1@53999" in str(raised.value)  # knotd's own log lines, for the reader
    assert not server.running
    server.stop()


def test_a_petrel_dkim_signature_verifies_against_the_key_served(dns_server: KnotServer, zone: str) -> None:
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = DkimKey.load(pem)
    record = key.public_record()
    assert len(record) > 255  # an RSA-2048 record needs two character-strings
    dns_server.publish(f"p1._domainkey.{zone}", "TXT", [record])
    message = MESSAGE.replace(b"{domain}", zone.encode())

    signed = sign(message, selector="p1", domain=zone, private_key=key) + message
    lookup = dkim_dnsfunc(dns_server.host, dns_server.port)
    assert dkim.verify(signed, dnsfunc=lookup)
    assert not dkim.verify(signed.replace(b"ships today", b"ships never"), dnsfunc=lookup)

    dns_server.remove(f"p1._domainkey.{zone}", "TXT")  # the key gone: the same signature fails
    assert not dkim.verify(signed, dnsfunc=lookup)
