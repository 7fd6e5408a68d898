"""In memory: API Gateway's API keys and usage plans (petrel.ports.UsagePlans), held to the same
contract tests as petrel.adapters.usage_plans against moto."""

from __future__ import annotations

import itertools
import threading

from petrel.ports import AlreadyExists, RecordNotFound


class FakeUsagePlans:
    def __init__(self, plan_ids: tuple[str, ...] = ()) -> None:
        self.keys: dict[str, tuple[str, str]] = {}  # id -> (name, value)
        self.plans: dict[str, set[str]] = {plan: set() for plan in plan_ids}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.calls = 0  # every call, so a test can see work done or not

    def add_plan(self, plan_id: str) -> None:
        self.plans.setdefault(plan_id, set())

    def plan_id(self, name: str) -> str:
        """Here a plan's name is its id."""
        with self._lock:
            self.calls += 1
            if name not in self.plans:
                raise RecordNotFound(f"no usage plan called {name}")
            return name

    def find_key(self, name: str) -> str | None:
        with self._lock:
            self.calls += 1
            return next((key_id for key_id, (n, _) in self.keys.items() if n == name), None)

    def ensure_key(self, name: str, value: str) -> str:
        found = self.find_key(name)
        if found is not None:
            return found
        with self._lock:
            if any(v == value for _, v in self.keys.values()):
                raise AlreadyExists(f"an API key has the value of {name}")
            key_id = f"key{next(self._ids)}"
            self.keys[key_id] = (name, value)
            return key_id

    def delete_key(self, key_id: str) -> None:
        with self._lock:
            self.calls += 1
            if self.keys.pop(key_id, None) is None:
                raise RecordNotFound(f"no API key {key_id}")
            for members in self.plans.values():
                members.discard(key_id)

    def _plan(self, plan_id: str) -> set[str]:
        if plan_id not in self.plans:
            raise RecordNotFound(f"no usage plan {plan_id}")
        return self.plans[plan_id]

    def plan_keys(self, plan_id: str) -> set[str]:
        with self._lock:
            self.calls += 1
            return set(self._plan(plan_id))

    def add_key(self, plan_id: str, key_id: str) -> None:
        with self._lock:
            self.calls += 1
            if key_id not in self.keys:
                raise RecordNotFound(f"no API key {key_id}")
            self._plan(plan_id).add(key_id)

    def remove_key(self, plan_id: str, key_id: str) -> None:
        with self._lock:
            self.calls += 1
            self._plan(plan_id).discard(key_id)

    def plans_of(self, key_id: str) -> set[str]:
        """The plans a key is in (for tests' checks)."""
        with self._lock:
            return {plan for plan, members in self.plans.items() if key_id in members}
