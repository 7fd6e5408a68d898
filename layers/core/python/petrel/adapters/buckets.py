"""TokenBuckets on DynamoDB (the BUCKETS table of petrel.resources): one item per key.

The rate arithmetic (GCRA on one `tat` number per bucket) is petrel.models.buckets.

`take` is one UpdateItem whose condition pins which side of `now` the stored tat is on:
- tat >= now (the bucket is being drained): `tat = tat + inc` if `tat <= now + tau - inc`; concurrent
  takers do not collide (each adds its own increment) until the bucket runs dry;
- tat < now or no item (the bucket is full): `tat = now + inc`.
Which side to try comes from the tat this instance last saw (ReturnValues); a condition that fails
returns the item as it is (ReturnValuesOnConditionCheckFailure=ALL_OLD), from which the grant is
recomputed and written again: never a token spent twice. No read in the common case; only a bucket
this instance last saw empty is read first (someone may have given tokens back since), since a
consistent read costs a fifth of a failed write.

The same item carries the bucket's slow-down (`slow_n` halvings held until `slow_until`, then undone one
each `slow_step`), daily counters are items of their own (`<key>#<day>`, count `n`), and a server's recent
outcomes are one item (two half-windows `cs`/`cb`, `ps`/`pb`; failure run `f`; version `v`). Every
item carries `expires_at`: an idle bucket that expires is a full one, which is what it would be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from petrel import resources
from petrel.models.buckets import (
    IDLE_EXPIRY_SECONDS,
    MICROS,
    Gcra,
    Window,
    check_outcomes,
    daily_expiry,
    half_window,
    micros,
    slowed_level,
)
from petrel.ports import MAX_SLOW_DOWN_HALVINGS, BucketSpec, Grant, ServerStats

if TYPE_CHECKING:
    from types_boto3_dynamodb.client import DynamoDBClient

ATTEMPTS = 8  # conditional writes one call makes before it gives up (granting nothing)
OUTCOME_ATTEMPTS = 16  # rotations of an outcome window tried before the batch is added unrotated
FACTOR_CACHE_SECONDS = 1.0  # how long a factor seen by this instance is trusted without a read

_TTL = resources.BUCKETS.ttl_attribute


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _num(item: dict[str, Any] | None, name: str) -> int | None:
    if not item or name not in item:
        return None
    return int(item[name]["N"])


def _failed_item(exc: ClientError) -> dict[str, Any]:
    """The item as it was when a condition failed (ALL_OLD); {} when there was none. Re-raises
    anything that is not a failed condition."""
    if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
        raise exc
    item: dict[str, Any] = exc.response.get("Item") or {}  # type: ignore[assignment]
    return item


class DynamoTokenBuckets:
    """petrel.ports.TokenBuckets on one DynamoDB table (module docstring). Keeps, per instance, the last
    tat and factor it saw of each key, so that its first guess is usually right (a wrong guess costs
    one failed conditional write, never a wrong grant)."""

    def __init__(self, db: DynamoDBClient, table: str) -> None:
        self._db = db
        self._table = table
        self._tat: dict[str, int | None] = {}
        self._slow: dict[str, tuple[int, int, int, int]] = {}  # key -> (seen at, halvings, until, step)
        self._daily: dict[str, int] = {}

    # -- rate buckets ------------------------------------------------------------------------------

    def take(self, bucket: BucketSpec, wanted: int, *, now: float) -> Grant:
        if wanted <= 0:
            return Grant(0, 0.0)
        gcra, now_us = Gcra.of(bucket), micros(now)
        tat, fresh = self._tat.get(bucket.key), False
        for _ in range(ATTEMPTS):
            count = min(wanted, gcra.available(tat, now_us))
            if count == 0 and not fresh:  # what this instance last saw may predate a give-back: look
                tat, fresh = self._read_tat(bucket.key), True
                count = min(wanted, gcra.available(tat, now_us))
            if count == 0:
                self._tat[bucket.key] = tat
                return Grant(0, max(gcra.wait(tat, now_us), 1e-6))
            fresh = True  # a failed write below returns the item as it is
            written, tat = self._advance(bucket.key, gcra, tat, count, now_us)
            if written:
                self._tat[bucket.key] = tat
                return Grant(count, 0.0 if count == wanted else gcra.wait(tat, now_us))
        self._tat[bucket.key] = tat
        return Grant(0, gcra.interval / MICROS)  # contention beyond ATTEMPTS: none now, try again soon

    def _advance(self, key: str, gcra: Gcra, tat: int | None, count: int, now: int) -> tuple[bool, int | None]:
        """One conditional write moving tat by `count` tokens from the side of `now` that `tat` is on.
        (True, new tat) when written; (False, the stored tat) when the guess was wrong."""
        cost = gcra.cost(count)
        if tat is not None and tat >= now:
            update, condition = "SET tat = tat + :cost, #e = :exp", "tat >= :now AND tat <= :limit"
            values = {":cost": _n(cost), ":now": _n(now), ":limit": _n(now + gcra.tau - cost)}
        else:
            update, condition = "SET tat = :new, #e = :exp", "attribute_not_exists(tat) OR tat < :now"
            values = {":new": _n(now + cost), ":now": _n(now)}
        values[":exp"] = _n(now // MICROS + IDLE_EXPIRY_SECONDS)
        try:
            out = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={"#e": _TTL},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            old = _failed_item(exc)
            self._remember_slow(key, old, now)
            return False, _num(old, "tat")
        item: dict[str, Any] = out.get("Attributes", {})
        self._remember_slow(key, item, now)
        return True, _num(item, "tat")

    def _read_tat(self, key: str) -> int | None:
        """The stored tat (a read costs a fifth of a failed write, and only an empty bucket needs it)."""
        out = self._db.get_item(
            TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True, ProjectionExpression="tat"
        )
        return _num(out.get("Item", {}), "tat")

    def give_back(self, bucket: BucketSpec, count: int, *, now: float) -> None:
        if count <= 0:
            return
        gcra, now_us = Gcra.of(bucket), micros(now)
        cost = gcra.cost(count)
        tat = self._tat.get(bucket.key, now_us + cost)  # guess: the common case, tokens just taken
        for _ in range(ATTEMPTS):
            if tat is None or tat <= now_us:
                return  # the bucket is full already: nothing to give back
            if tat - cost >= now_us:
                update, condition = "SET tat = tat - :cost", "tat >= :floor"
                values = {":cost": _n(cost), ":floor": _n(now_us + cost)}
            else:  # giving back all would overfill it: it becomes full
                update, condition = "SET tat = :now", "tat > :now AND tat < :floor"
                values = {":now": _n(now_us), ":floor": _n(now_us + cost)}
            try:
                out = self._db.update_item(
                    TableName=self._table,
                    Key={"pk": {"S": bucket.key}},
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                    ReturnValues="UPDATED_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                tat = _num(_failed_item(exc), "tat")
                continue
            self._tat[bucket.key] = _num(out.get("Attributes", {}), "tat")
            return

    # -- daily counters ----------------------------------------------------------------------------

    def take_daily(self, key: str, wanted: int, *, cap: int, day: str) -> int:
        if wanted <= 0:
            return 0
        item_key = f"{key}#{day}"
        counted = self._daily.get(item_key, 0)  # a day's count only grows: what we saw is a floor
        for _ in range(ATTEMPTS):
            count = min(wanted, cap - counted)
            if count <= 0:
                self._daily[item_key] = counted
                return 0
            try:
                out = self._db.update_item(
                    TableName=self._table,
                    Key={"pk": {"S": item_key}},
                    UpdateExpression="ADD n :count SET #e = if_not_exists(#e, :exp)",
                    ConditionExpression="attribute_not_exists(n) OR n <= :room",
                    ExpressionAttributeNames={"#e": _TTL},
                    ExpressionAttributeValues={
                        ":count": _n(count),
                        ":room": _n(cap - count),
                        ":exp": _n(daily_expiry(day)),
                    },
                    ReturnValues="UPDATED_NEW",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                counted = _num(_failed_item(exc), "n") or 0
                continue
            self._daily[item_key] = _num(out.get("Attributes", {}), "n") or counted + count
            return count
        return 0

    # -- slow-downs --------------------------------------------------------------------------------

    def slow_down(self, key: str, *, now: float, seconds: float) -> float:
        now_us, step = micros(now), max(1, micros(seconds))
        item = self._read(key)
        for _ in range(ATTEMPTS):
            old_hold = _num(item, "slow_until")
            level = slowed_level(_num(item, "slow_n") or 0, old_hold or 0, _num(item, "slow_step") or 1, now_us)
            level = min(level + 1, MAX_SLOW_DOWN_HALVINGS)
            values = {
                ":lvl": _n(level),
                ":hold": _n(now_us + step),
                ":step": _n(step),
                ":exp": _n(now_us // MICROS + IDLE_EXPIRY_SECONDS),
            }
            if old_hold is None:
                condition = "attribute_not_exists(slow_until)"
            else:
                condition, values[":old"] = "slow_until = :old", _n(old_hold)
            try:
                self._db.update_item(
                    TableName=self._table,
                    Key={"pk": {"S": key}},
                    UpdateExpression="SET slow_n = :lvl, slow_until = :hold, slow_step = :step, #e = :exp",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#e": _TTL},
                    ExpressionAttributeValues=values,
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as exc:
                item = _failed_item(exc)
                continue
            self._slow[key] = (now_us, level, now_us + step, step)
            return 0.5**level
        return self.factor(key, now=now)

    def factor(self, key: str, *, now: float) -> float:
        now_us = micros(now)
        seen = self._slow.get(key)
        if seen is None or not 0 <= now_us - seen[0] <= micros(FACTOR_CACHE_SECONDS):
            self._remember_slow(key, self._read(key), now_us)
            seen = self._slow[key]
        _, level, hold, step = seen
        return 0.5 ** slowed_level(level, hold, step, now_us)

    def _remember_slow(self, key: str, item: dict[str, Any] | None, now: int) -> None:
        """Keep the slow-down state an answer carried: the factor at any later instant follows from it."""
        self._slow[key] = (now, _num(item, "slow_n") or 0, _num(item, "slow_until") or 0, _num(item, "slow_step") or 1)

    def _read(self, key: str) -> dict[str, Any]:
        out = self._db.get_item(
            TableName=self._table,
            Key={"pk": {"S": key}},
            ConsistentRead=True,
            ProjectionExpression="slow_n, slow_until, slow_step",
        )
        return out.get("Item", {})

    # -- server outcomes ---------------------------------------------------------------------------

    def record_outcomes(self, key: str, *, sends: int, bounces: int, failures: int, window: int) -> ServerStats:
        check_outcomes(sends, bounces, failures, window)
        half = half_window(window)
        if sends < half:
            added = self._add_outcomes(key, sends, bounces, failures, half)
            if isinstance(added, ServerStats):
                return added
            old = added
        else:
            old = self._read_window(key)
        for _ in range(OUTCOME_ATTEMPTS):
            new = old.after(sends, bounces, failures, window)
            try:
                self._put_window(key, old, new)
            except ClientError as exc:
                old = _window(_failed_item(exc))
                continue
            return new.stats()
        added = self._add_outcomes(key, sends, bounces, failures, None)
        return added if isinstance(added, ServerStats) else added.stats()

    def _add_outcomes(
        self, key: str, sends: int, bounces: int, failures: int, half: int | None
    ) -> ServerStats | Window:
        """The common case in one write: the batch fits the newer half-window. Returns the stats, or
        the window as it is when it does not fit (it must rotate). `half` None: add whatever the window
        holds (no condition; the newer half may run over until the next rotation): the last resort of a
        rotation that lost every race, so that a batch is never lost."""
        run = "SET f = :f" if sends > 0 else "ADD f :f"
        update = f"ADD cs :s, cb :b, v :one {run}" if sends > 0 else "ADD cs :s, cb :b, v :one, f :f"
        values = {":s": _n(sends), ":b": _n(bounces), ":one": _n(1), ":f": _n(failures)}
        condition = "attribute_not_exists(v) OR attribute_exists(v)"  # always true: the last resort
        if half is not None:
            condition = "attribute_not_exists(cs) OR cs < :room"
            values[":room"] = _n(half - sends)
        try:
            out = self._db.update_item(
                TableName=self._table,
                Key={"pk": {"S": key}},
                UpdateExpression=update,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                ConditionExpression=condition,
            )
        except ClientError as exc:
            return _window(_failed_item(exc))
        return _window(out.get("Attributes", {})).stats()

    def _put_window(self, key: str, old: Window, new: Window) -> None:
        """Write `new` if the item is still `old` (its version)."""
        condition = "attribute_not_exists(v)" if old.version == 0 else "v = :old"
        values = {
            ":cs": _n(new.cur_sends),
            ":cb": _n(new.cur_bounces),
            ":ps": _n(new.prev_sends),
            ":pb": _n(new.prev_bounces),
            ":f": _n(new.failures),
            ":v": _n(new.version),
        }
        if old.version:
            values[":old"] = _n(old.version)
        self._db.update_item(
            TableName=self._table,
            Key={"pk": {"S": key}},
            UpdateExpression="SET cs = :cs, cb = :cb, ps = :ps, pb = :pb, f = :f, v = :v",
            ConditionExpression=condition,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )

    def _read_window(self, key: str) -> Window:
        out = self._db.get_item(TableName=self._table, Key={"pk": {"S": key}}, ConsistentRead=True)
        return _window(out.get("Item", {}))


def _window(item: dict[str, Any] | None) -> Window:
    def get(name: str) -> int:
        return _num(item, name) or 0

    return Window(get("cs"), get("cb"), get("ps"), get("pb"), get("f"), get("v"))
