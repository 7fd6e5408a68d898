"""API Gateway (REST) API keys and usage plans: the edge's per-tenant throttle (petrel.ports.UsagePlans).

A tenant's key is found by its name (deterministic, petrel.services.auth.usage_key_name), so enrolling
again after a crash finds the key made the first time instead of making a second one. Its value is not a
secret: the API's key source is the authorizer, so a client can never present a key itself.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from petrel.ports import AlreadyExists, RecordNotFound

_NOT_FOUND = "NotFoundException"
_CONFLICT = "ConflictException"
_PAGE = 500  # the most API Gateway lists in one page


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ApiGatewayUsagePlans:
    """`client` is a boto3 `apigateway` client (no typed stubs are pinned for it, hence Any)."""

    def __init__(self, client: Any) -> None:
        self._apigw = client
        self._plan_ids: dict[str, str] = {}  # a plan's id never changes: found once per container

    def plan_id(self, name: str) -> str:
        if name not in self._plan_ids:
            for page in self._apigw.get_paginator("get_usage_plans").paginate(PaginationConfig={"PageSize": _PAGE}):
                for item in page.get("items", []):
                    self._plan_ids.setdefault(str(item.get("name")), str(item["id"]))
        if name not in self._plan_ids:
            raise RecordNotFound(f"no usage plan called {name}")
        return self._plan_ids[name]

    def find_key(self, name: str) -> str | None:
        # nameQuery is a prefix match: keep the exact name only.
        for page in self._apigw.get_paginator("get_api_keys").paginate(
            nameQuery=name, includeValues=False, PaginationConfig={"PageSize": _PAGE}
        ):
            for item in page.get("items", []):
                if item.get("name") == name:
                    return str(item["id"])
        return None

    def ensure_key(self, name: str, value: str) -> str:
        found = self.find_key(name)
        if found is not None:
            return found
        try:
            created = self._apigw.create_api_key(name=name, value=value, enabled=True)
        except ClientError as exc:
            # A concurrent enrollment made it between our lookup and our create: use that one.
            if _code(exc) == _CONFLICT and (raced := self.find_key(name)) is not None:
                return raced
            if _code(exc) == _CONFLICT:
                raise AlreadyExists(f"another API key has the value of {name}") from exc
            raise
        return str(created["id"])

    def delete_key(self, key_id: str) -> None:
        try:
            self._apigw.delete_api_key(apiKey=key_id)
        except ClientError as exc:
            if _code(exc) == _NOT_FOUND:
                raise RecordNotFound(f"no API key {key_id}") from exc
            raise

    def plan_keys(self, plan_id: str) -> set[str]:
        keys: set[str] = set()
        try:
            for page in self._apigw.get_paginator("get_usage_plan_keys").paginate(
                usagePlanId=plan_id, PaginationConfig={"PageSize": _PAGE}
            ):
                keys.update(str(item["id"]) for item in page.get("items", []))
        except ClientError as exc:
            if _code(exc) == _NOT_FOUND:
                raise RecordNotFound(f"no usage plan {plan_id}") from exc
            raise
        return keys

    def _in_plan(self, plan_id: str, key_id: str) -> bool:
        """One GET for one key (not a listing of the plan's keys, which grows with its tenants)."""
        try:
            self._apigw.get_usage_plan_key(usagePlanId=plan_id, keyId=key_id)
        except ClientError as exc:
            if _code(exc) == _NOT_FOUND:
                return False
            raise
        return True

    def add_key(self, plan_id: str, key_id: str) -> None:
        if self._in_plan(plan_id, key_id):
            return
        try:
            self._apigw.create_usage_plan_key(usagePlanId=plan_id, keyId=key_id, keyType="API_KEY")
        except ClientError as exc:
            if _code(exc) == _CONFLICT and self._in_plan(plan_id, key_id):
                return  # added meanwhile
            raise

    def remove_key(self, plan_id: str, key_id: str) -> None:
        # Looked up first: most enrollments find the key in no other plan (and moto fails a DELETE on
        # a plan that never had a key, where API Gateway answers NotFound).
        if not self._in_plan(plan_id, key_id):
            return
        try:
            self._apigw.delete_usage_plan_key(usagePlanId=plan_id, keyId=key_id)
        except ClientError as exc:
            if _code(exc) != _NOT_FOUND:
                raise
