"""The smoke mode every benchmark has: the smallest sizes, one repeat.

A smoke run proves that a benchmark still runs from end to end, against
today's code: the test suite runs each one (``tests/test_benchmarks.py``), so
a benchmark that breaks fails CI instead of rotting. Its figures are not
measurements, and its output says so first; figures come only from full runs.

A benchmark adds ``--smoke`` to its parser with :func:`add_argument`, and
after parsing calls :func:`apply` with the smallest value of each of its
options.
"""

from __future__ import annotations

import argparse
from typing import Any

BANNER = (
    "SMOKE RUN (--smoke): the smallest sizes and one repeat, to prove that the benchmark runs; "
    "these figures are not measurements."
)


def add_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--smoke`` to a benchmark's ``parser``."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="run at the smallest sizes with one repeat, to check that the benchmark works; "
        "the figures of such a run mean nothing",
    )


def apply(args: argparse.Namespace, **smallest: Any) -> argparse.Namespace:
    """With ``--smoke``, set each option of ``smallest`` on ``args`` and print the banner."""
    if args.smoke:
        for name, value in smallest.items():
            if not hasattr(args, name):
                raise AttributeError(f"the benchmark has no option {name!r} to make small")
            setattr(args, name, value)
        print(BANNER, flush=True)
    return args
