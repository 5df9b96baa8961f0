"""The pure rules of per-actor limits: an actor's settings from its params, how many
subjects a claim may take, and how long a worker leaves a held actor alone."""

from __future__ import annotations

import pytest

from interpreter.errors import DefinitionError
from interpreter.limits import CONCURRENCY_RECHECK_S, LimitSettings, allowance, held_for


def test_an_actor_without_limits_has_no_settings() -> None:
    assert LimitSettings.of("a", {}) is None
    assert LimitSettings.of("a", {"breaker_threshold": 3}) is None


def test_the_burst_defaults_to_one_seconds_worth_and_at_least_one() -> None:
    assert LimitSettings.of("a", {"rate_per_s": 5}) == LimitSettings(5.0, 5.0, None)
    assert LimitSettings.of("a", {"rate_per_s": 0.2}) == LimitSettings(0.2, 1.0, None)
    assert LimitSettings.of("a", {"rate_per_s": 5, "rate_burst": 20}).burst == 20.0
    assert LimitSettings.of("a", {"max_concurrency": 2}) == LimitSettings(None, 1.0, 2)


@pytest.mark.parametrize("params", [{"rate_per_s": 0}, {"rate_per_s": -1},
                                    {"rate_per_s": "5"}, {"max_concurrency": True},
                                    {"max_concurrency": float("nan")},
                                    {"rate_per_s": 1, "rate_burst": 0}])
def test_a_limit_that_is_not_a_positive_number_is_refused_naming_the_actor(params) -> None:
    with pytest.raises(DefinitionError, match="actor api"):
        LimitSettings.of("api", params)


def test_a_claim_takes_no_more_than_the_whole_tokens_in_the_bucket() -> None:
    rate = LimitSettings(5.0, 5.0, None)
    assert allowance(rate, 100, tokens=3.7, leased=0) == 3
    assert allowance(rate, 2, tokens=3.7, leased=0) == 2
    assert allowance(rate, 100, tokens=0.99, leased=50) == 0
    assert allowance(rate, 100, tokens=0.9999999999, leased=0) == 1  # float dust


def test_a_claim_takes_no_more_than_the_free_concurrency() -> None:
    both = LimitSettings(5.0, 5.0, 2)
    assert allowance(both, 100, tokens=5, leased=0) == 2
    assert allowance(both, 100, tokens=5, leased=1) == 1
    assert allowance(both, 100, tokens=5, leased=3) == 0   # over (the limit was lowered)
    assert allowance(both, 100, tokens=0.5, leased=0) == 0


def test_a_held_actor_waits_for_its_next_token_or_a_recheck() -> None:
    assert held_for(LimitSettings(5.0, 5.0, None), tokens=0.5, leased=0) == pytest.approx(0.1)
    assert held_for(LimitSettings(0.5, 1.0, None), tokens=0.0, leased=0) == pytest.approx(2.0)
    assert held_for(LimitSettings(None, 1.0, 2), tokens=0, leased=2) == CONCURRENCY_RECHECK_S
    assert held_for(LimitSettings(0.1, 1.0, 2), tokens=0.5, leased=2) == pytest.approx(5.0)
