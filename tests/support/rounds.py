"""How many rounds the reliability suite's concurrency tests run.

CI runs every round (``ROUNDS``); so does a plain ``pytest`` or ``make
test``. A developer may run fewer with ``--concurrency-rounds N`` (or
``make test PYTEST_ARGS="--concurrency-rounds 1"``); under ``CI=true`` a
smaller number is refused, so that CI never runs less than all of them.
"""

from __future__ import annotations

import pytest

from tests.support.server import IN_CI

ROUNDS = 4
OPTION = "--concurrency-rounds"


def add_option(parser: pytest.Parser) -> None:
    parser.addoption(
        OPTION,
        type=int,
        default=None,
        metavar="N",
        help=f"run N rounds of each concurrency scenario (default and under CI=true: {ROUNDS})",
    )


def concurrency_rounds(config: pytest.Config) -> int:
    """Return the number of rounds to run; raise a usage error for one CI may not use."""
    chosen = config.getoption(OPTION)
    if chosen is None:
        return ROUNDS
    if chosen < 1:
        raise pytest.UsageError(f"{OPTION} takes 1 or more, not {chosen}")
    if IN_CI and chosen < ROUNDS:
        raise pytest.UsageError(f"CI=true runs all {ROUNDS} concurrency rounds; drop {OPTION}")
    return chosen
