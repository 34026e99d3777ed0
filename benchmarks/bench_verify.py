"""Benchmark: ``manage.py alembic_verify`` against a bare upgrade and downgrade with raw Alembic.

In one run, on the same PostgreSQL server, timed as whole processes and
interleaved:

- **verify**: ``manage.py alembic_verify --json`` beside the server's
  database (it creates, checks and drops its own scratch database);
- **raw**: ``alembic upgrade head`` then ``alembic downgrade base``, two
  processes, on a fresh database made for each repeat (its creation and
  drop are not timed).

The figure is the ratio of medians, verify / raw; the goal (issue 5) is at
most 3x. The verify report's own per-check durations are printed too, so a
miss shows at once where the time goes.

Each side pays the interpreter's start-up (Python, Django, SQLAlchemy,
Alembic: most of a second), raw twice and verify once, so the ratio flatters
verify on a short history. ``alembic current`` on the empty database is timed
as well, as an estimate of one start-up, and the ratio with the start-ups
taken out is printed beside the figure: it is what grows with the history.

``--extra-revisions N`` runs both on a temporary copy of the project whose
history has N more revisions after head, each a no-op (``SELECT 1`` both
ways), with its ledger rewritten first (``alembic_verify --update-ledger``),
to show how the ratio grows with the length of the history.

    .venv/bin/python benchmarks/bench_verify.py [--repeat 7] [--server URL] [--smoke]
    .venv/bin/python benchmarks/bench_verify.py --extra-revisions 50
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from benchmarks import smoke  # noqa: E402

# The same scratch databases and subprocess environment as the upgrade benchmark.
from benchmarks.bench_upgrade import create_database, django_environment, drop_database  # noqa: E402

DEFAULT_SERVER = os.environ.get(
    "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
GOAL = 3.0
# What a copy of the project needs to run manage.py and alembic.
TREE = ("manage.py", "alembic.ini", "config", "materials", "migsupport", "alembic")

VERIFY = [sys.executable, "manage.py", "alembic_verify", "--json"]
ALEMBIC = str(Path(sys.executable).parent / "alembic")
UPGRADE = [ALEMBIC, "upgrade", "head"]
DOWNGRADE = [ALEMBIC, "downgrade", "base"]
CURRENT = [ALEMBIC, "current"]

NOOP_REVISION = '''"""No-op revision {number} of the benchmark."""

from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade():
    op.execute("SELECT 1")


def downgrade():
    op.execute("SELECT 1")
'''


def timed(argv: list[str], url: sa.URL, root: Path) -> tuple[float, str]:
    """Run ``argv`` from the project ``root`` on ``url``; return its wall time and stdout."""
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=root, env=django_environment(url), capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv[1:])} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return seconds, done.stdout


def run_verify(server: sa.URL, root: Path) -> tuple[float, dict[str, float]]:
    seconds, stdout = timed(VERIFY, server, root)
    report = json.loads(stdout)
    if not report["passed"]:
        sys.exit(f"alembic_verify did not pass on the project:\n{stdout}")
    return seconds, {check["name"]: check["seconds"] for check in report["checks"]}


def run_raw(server: sa.URL, root: Path, created: list[sa.URL]) -> tuple[float, float, float]:
    """Return the wall times of ``alembic current``, upgrade and downgrade on a fresh database."""
    fresh = create_database(server)
    created.append(fresh)
    try:
        startup, _ = timed(CURRENT, fresh, root)
        up, _ = timed(UPGRADE, fresh, root)
        down, _ = timed(DOWNGRADE, fresh, root)
    finally:
        drop_database(server, fresh)
        created.remove(fresh)
    return startup, up, down


def history_length(root: Path) -> int:
    """Return how many revisions the project at ``root`` has."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(Config(str(root / "alembic.ini")))
    return len(list(scripts.walk_revisions()))


def longer_history(folder: Path, extra: int, server: sa.URL) -> Path:
    """Copy the project into ``folder`` with ``extra`` no-op revisions after head."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    for name in TREE:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, folder / name)
    down = ScriptDirectory.from_config(Config(str(folder / "alembic.ini"))).get_current_head()
    for number in range(1, extra + 1):
        revision = f"bench{number:07d}"
        (folder / "alembic" / "versions" / f"{revision}_noop.py").write_text(
            NOOP_REVISION.format(number=number, revision=revision, down_revision=down)
        )
        down = revision
    timed([*VERIFY, "--update-ledger"], server, folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument(
        "--extra-revisions",
        type=int,
        default=0,
        metavar="N",
        help="append N no-op revisions, in a temporary copy of the project",
    )
    smoke.add_argument(parser)
    args = smoke.apply(parser.parse_args(), repeat=1)
    server = sa.make_url(args.server).set(drivername="postgresql+psycopg")

    verify: list[float] = []
    checks: dict[str, list[float]] = {}
    startup: list[float] = []
    upgrade: list[float] = []
    downgrade: list[float] = []
    created: list[sa.URL] = []
    with tempfile.TemporaryDirectory(prefix="bench_verify_") as folder:
        root = PROJECT
        if args.extra_revisions:
            root = longer_history(Path(folder), args.extra_revisions, server)
        revisions = history_length(root)
        try:
            # One warm-up of each (bytecode, the server's caches), not counted.
            run_verify(server, root)
            run_raw(server, root, created)
            for _ in range(args.repeat):
                # Interleaved, so that the machine's noise falls on both sides alike.
                seconds, per_check = run_verify(server, root)
                verify.append(seconds)
                for name, spent in per_check.items():
                    checks.setdefault(name, []).append(spent)
                started, up, down = run_raw(server, root, created)
                startup.append(started)
                upgrade.append(up)
                downgrade.append(down)
        finally:
            for url in created:
                drop_database(server, url)

    med = statistics.median
    raw = med([u + d for u, d in zip(upgrade, downgrade, strict=True)])
    ratio = med(verify) / raw
    in_checks = sum(med(spent) for spent in checks.values())
    extra = args.extra_revisions
    print(
        f"history: {revisions} revisions"
        + (f" ({revisions - extra} + {extra} no-ops)" if extra else "")
    )
    print(f"{'process':<46}{'median (s)':>11}")
    rows = [
        ("alembic upgrade head", med(upgrade)),
        ("alembic downgrade base", med(downgrade)),
        ("raw: upgrade + downgrade", raw),
        ("verify: manage.py alembic_verify", med(verify)),
        *((f"  check {name}", med(spent)) for name, spent in checks.items()),
        ("  outside the checks (start-up, scratch db)", med(verify) - in_checks),
        ("start-up estimate: alembic current, empty db", med(startup)),
    ]
    for label, seconds in rows:
        print(f"{label:<46}{seconds:>11.3f}")
    verdict = "meets" if ratio <= GOAL else "MISSES"
    print(f"ratio verify / raw: {ratio:.2f}x ({verdict} the goal of <= {GOAL:.0f}x)")
    work = (med(verify) - med(startup)) / (raw - 2 * med(startup))
    print(f"ratio with the start-ups taken out (estimate): {work:.2f}x")
    bytecode = (
        " PYTHONDONTWRITEBYTECODE is set." if os.environ.get("PYTHONDONTWRITEBYTECODE") else ""
    )
    print(f"(medians of {args.repeat} interleaved runs each, after one warm-up.{bytecode})")


if __name__ == "__main__":
    main()
