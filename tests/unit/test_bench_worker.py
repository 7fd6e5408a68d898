"""bench.worker's model arithmetic: the fleet's rate, the concurrency a target needs, Lambda's CPU share
and the memory chosen from a measurement."""

from __future__ import annotations

import pytest

from bench.worker import LAMBDA_FULL_VCPU_MB, choose_memory, concurrency_needed, lambda_wall_ms, modelled_rate


def test_the_fleet_rate_is_one_invocations_rate_times_the_invocations_at_once() -> None:
    assert modelled_rate(42.5, 30) == pytest.approx(1275.0)


@pytest.mark.parametrize(
    ("target", "per_invocation", "needed"),
    [(1000.0, 42.0, 24), (1000.0, 50.0, 20), (1000.0, 2000.0, 1), (1000.0, 33.4, 30)],
)
def test_the_concurrency_needed_is_the_smallest_that_reaches_the_target(
    target: float, per_invocation: float, needed: int
) -> None:
    assert concurrency_needed(target, per_invocation) == needed
    assert modelled_rate(per_invocation, needed) >= target
    assert needed == 1 or modelled_rate(per_invocation, needed - 1) < target


def test_an_invocation_that_relays_nothing_needs_no_concurrency_figure() -> None:
    with pytest.raises(ValueError, match="relays nothing"):
        concurrency_needed(1000.0, 0.0)


def test_cpu_work_stretches_below_one_vcpu_and_not_above() -> None:
    assert lambda_wall_ms(200.0, 10.0, LAMBDA_FULL_VCPU_MB) == pytest.approx(210.0)
    assert lambda_wall_ms(200.0, 10.0, LAMBDA_FULL_VCPU_MB // 2) == pytest.approx(200.0 + 10.0 * 1769 / 884)
    assert lambda_wall_ms(200.0, 10.0, 4096) == pytest.approx(210.0)


def test_an_io_bound_invocation_gets_the_smallest_memory_that_holds_twice_its_peak() -> None:
    assert choose_memory(100.0, io_ms=300.0, cpu_ms=5.0) == 512
    assert choose_memory(300.0, io_ms=300.0, cpu_ms=5.0) == 768


def test_a_cpu_bound_invocation_gets_more_memory_for_its_cpu_share() -> None:
    assert choose_memory(100.0, io_ms=10.0, cpu_ms=200.0) == 1769
    assert choose_memory(100.0, io_ms=10.0, cpu_ms=200.0, slack=0.5) == 1280


def test_a_peak_no_option_holds_gets_the_largest_option() -> None:
    assert choose_memory(5000.0, io_ms=300.0, cpu_ms=5.0, options=(512, 1024)) == 1024
