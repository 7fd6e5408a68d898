"""In-memory DnsResolver: a zone as a dict, and names that time out (held to the adapter's contract)."""

from __future__ import annotations

from collections.abc import Iterable

from petrel.models.records import DnsRecordCheck
from petrel.ports import DnsLookupError


class FakeResolver:
    def __init__(self) -> None:
        self.txts: dict[str, list[str]] = {}
        self.mxs: dict[str, list[tuple[int, str]]] = {}
        self.failing: set[str] = set()  # names whose lookups get no answer (a timeout)
        self.lookups: list[tuple[str, str]] = []

    @staticmethod
    def _name(name: str) -> str:
        return name.lower().rstrip(".")

    def publish_txt(self, name: str, *values: str) -> None:
        """Replace the TXT records at `name` (none: remove them)."""
        if values:
            self.txts[self._name(name)] = list(values)
        else:
            self.txts.pop(self._name(name), None)

    def publish_mx(self, name: str, *hosts: tuple[int, str]) -> None:
        if hosts:
            self.mxs[self._name(name)] = [(p, self._name(h)) for p, h in hosts]
        else:
            self.mxs.pop(self._name(name), None)

    def _ask(self, name: str, rtype: str) -> str:
        key = self._name(name)
        self.lookups.append((key, rtype))
        if key in self.failing:
            raise DnsLookupError(f"{rtype} {key}: timed out")
        return key

    def txt(self, name: str) -> list[str]:
        return list(self.txts.get(self._ask(name, "TXT"), []))

    def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted(self.mxs.get(self._ask(name, "MX"), []))

    def publish(self, records: Iterable[DnsRecordCheck]) -> None:
        """Publish records as `POST /v1/domains` answered them (what a tenant does in their zone)."""
        txt: dict[str, list[str]] = {}
        mx: dict[str, list[tuple[int, str]]] = {}
        for record in records:
            if record.type == "MX":
                preference, host = record.value.split()
                mx.setdefault(record.name, []).append((int(preference), host))
            else:
                txt.setdefault(record.name, []).append(record.value)
        for name, values in txt.items():
            self.publish_txt(name, *values)
        for name, hosts in mx.items():
            self.publish_mx(name, *hosts)
