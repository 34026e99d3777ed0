"""Clean-database verification of the migration history.

What a careful release manager checks by hand before each release, run
mechanically on a scratch database:

1. a single head, and an intact chain;
2. the upgrade from empty to head, one revision at a time; each revision is
   also applied a second time over its own schema (check 6), which must
   succeed and change nothing;
3. the models (through the bridge) equal the DDL at head;
4. the downgrade to base, one revision at a time, each step leaving exactly
   the schema of the revision below;
5. the upgrade to head again;
6. running each revision twice is safe (done during check 2);
7. the ledger is fresh.

Checks that need an earlier one to have passed are skipped when it failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError as AlembicCommandError

from migsupport import bridge
from migsupport.engine import create_engine, error_line, safe_url
from migsupport.history import migrate
from migsupport.ledger import Ledger, ledger_path, revision_order
from migsupport.scratch import scratch_database
from migsupport.snapshot import Snapshot, compare, take_snapshot

Progress = Callable[[str, dict[str, Any]], None]

SINGLE_HEAD = "single_head"
UPGRADE = "upgrade"
MODELS_MATCH_DDL = "models_match_ddl"
DOWNGRADE = "downgrade"
UPGRADE_AGAIN = "upgrade_again"
IDEMPOTENT = "idempotent"
LEDGER_FRESH = "ledger_fresh"

TITLES = {
    SINGLE_HEAD: "single head and an intact chain",
    UPGRADE: "upgrade from empty to head, one revision at a time",
    MODELS_MATCH_DDL: "models equal the DDL at head",
    DOWNGRADE: "downgrade to base, one revision at a time, leaving no trace",
    UPGRADE_AGAIN: "upgrade to head again",
    IDEMPOTENT: "running each revision twice is safe",
    LEDGER_FRESH: "the ledger is fresh",
}
ORDER = (SINGLE_HEAD, UPGRADE, MODELS_MATCH_DDL, DOWNGRADE, UPGRADE_AGAIN, IDEMPOTENT, LEDGER_FRESH)

PASSED, FAILED, SKIPPED, UPDATED = "passed", "failed", "skipped", "updated"


@dataclass(frozen=True)
class CheckResult:
    """One check: its outcome, how long it took, and what went wrong."""

    name: str
    status: str
    seconds: float = 0.0
    problems: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return TITLES[self.name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "seconds": round(self.seconds, 6),
            "problems": list(self.problems),
        }


@dataclass(frozen=True)
class VerifyReport:
    """Every check's result, in order."""

    dialect: str
    scratch: str
    checks: tuple[CheckResult, ...] = field(default_factory=tuple)
    ledger_written: bool = False

    @property
    def passed(self) -> bool:
        return all(check.status in (PASSED, UPDATED) for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "dialect": self.dialect,
            "scratch": self.scratch,
            "ledger_written": self.ledger_written,
            "checks": [check.to_dict() for check in self.checks],
        }


class _Failed(Exception):
    """A check found problems; it ends that check."""

    def __init__(self, *problems: str) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def check_chain(scripts: ScriptDirectory) -> list[str]:
    """Return what is wrong with the revision graph: heads, bases, cycles, dangling links."""
    try:
        heads = tuple(scripts.get_heads())
        bases = tuple(scripts.get_bases())
        revisions = list(scripts.walk_revisions())
    except (RevisionError, AlembicCommandError) as exc:
        return [f"the revision graph is broken: {error_line(exc)}"]
    problems: list[str] = []
    if len(heads) > 1:
        problems.append(
            f"{len(heads)} heads: {', '.join(heads)}; merge them with `alembic merge heads`"
        )
    if len(bases) > 1:
        problems.append(
            f"{len(bases)} bases: {', '.join(bases)}; every revision but one must have a "
            "down_revision (the others are orphaned)"
        )
    if not revisions:
        problems.append("there are no revisions")
    return problems


def _model_scope(snapshot: Snapshot) -> Snapshot:
    """Return what of ``snapshot`` the models can say: tables, columns, keys, indexes, ENUMs.

    Triggers, rules, policies, checks, functions and the like exist only in
    revisions; the models have no field for them, so they are not compared.
    """
    tables = {
        name: {
            "columns": shape.get("columns", {}),
            "constraints": {
                key: constraint
                for key, constraint in shape.get("constraints", {}).items()
                if constraint.get("type") != "check"
            },
            "indexes": shape.get("indexes", {}),
        }
        for name, shape in snapshot.tables.items()
    }
    return Snapshot(tables=tables, enums=snapshot.enums)


def models_schema(url: sa.URL) -> Snapshot:
    """Return the schema the models (through the bridge) describe, as the database renders it.

    The models' metadata is created on a scratch database of its own beside
    ``url`` and read back with the reader the state engine uses, so the
    comparison with the migrations speaks in the same words.
    """
    with scratch_database(url) as models_url:
        engine = create_engine(models_url)
        try:
            with engine.begin() as connection:
                bridge.build_metadata().create_all(connection)
            with engine.connect() as connection:
                return take_snapshot(connection, hidden=bridge.django_table_names())
        finally:
            engine.dispose()


def model_differences(head: Snapshot, models: Snapshot) -> list[str]:
    """Return how the DDL at head differs from what the models describe.

    Each line is a :class:`Difference` in the words ``alembic_status`` uses
    ("expected" is the models' side), led by the model field it concerns
    (or the model), so that a field with no migration is named.
    """
    owners = _owners()
    lines: list[str] = []
    for difference in compare(_model_scope(head), _model_scope(models)):
        obj = difference.object
        owner = owners.get(obj.name) if obj.type == "column" else None
        owner = owner or owners.get(obj.table or obj.name if obj.type != "column" else "")
        lines.append(f"{owner}: {difference}" if owner else str(difference))
    return lines


def _owners() -> dict[str, str]:
    """Return the model field of each ``table.column``, and the model of each table."""
    result: dict[str, str] = {}
    for model in bridge.owned_models():
        table = model._meta.db_table
        result[table] = model._meta.label
        for model_field in model._meta.local_concrete_fields:
            result[f"{table}.{model_field.column}"] = f"{model._meta.label}.{model_field.name}"
    return result


class _Run:
    """One verification run on one scratch connection."""

    def __init__(self, connection: sa.Connection, config: Config, progress: Progress | None):
        self.connection = connection
        self.config = config
        self.scripts = ScriptDirectory.from_config(config)
        self.order = revision_order(self.scripts)
        self.progress = progress
        self.snapshots: dict[str, Snapshot] = {}

    def emit(self, event: str, **data: Any) -> None:
        if self.progress is not None:
            self.progress(event, data)

    def alembic(self, action: str, revision: str) -> None:
        self.config.attributes["connection"] = self.connection
        try:
            migrate(self.config, self.scripts, action, revision)
            self.connection.commit()
        finally:
            if self.connection.in_transaction():
                self.connection.rollback()

    def snapshot(self) -> Snapshot:
        snapshot = take_snapshot(self.connection, hidden=bridge.django_table_names())
        self.connection.rollback()
        return snapshot

    def down(self, revision: str) -> str:
        down = self.scripts.get_revision(revision).down_revision
        if isinstance(down, (tuple, list)):
            down = down[0]
        return down or "base"

    def upgrade_step_by_step(self) -> list[str]:
        """Check 2, with check 6 built in: return the revisions that are not idempotent."""
        not_idempotent: list[str] = []
        for revision in self.order:
            started = time.perf_counter()
            try:
                self.alembic("upgrade", revision)
            except Exception as exc:
                raise _Failed(f"revision {revision} failed to upgrade: {error_line(exc)}") from exc
            applied = self.snapshot()
            self.snapshots[revision] = applied
            twice = self._apply_twice(revision, applied)
            if twice:
                not_idempotent.append(twice)
            # The upgrade itself worked; the second application is check 6's.
            self.emit("revision", check=UPGRADE, revision=revision,
                      seconds=time.perf_counter() - started, ok=True,
                      idempotent=not twice)  # fmt: skip
        return not_idempotent

    def _apply_twice(self, revision: str, applied: Snapshot) -> str | None:
        """Apply ``revision`` again over its own schema; return the problem, if any."""
        try:
            self.alembic("stamp", self.down(revision))
            self.alembic("upgrade", revision)
        except Exception as exc:
            # Leave the database where a working revision would have left it.
            self.alembic("stamp", revision)
            return f"revision {revision} fails when applied a second time: {error_line(exc)}"
        differences = compare(self.snapshot(), applied)
        if differences:
            return (
                f"revision {revision} changes the schema when applied a second time: "
                + "; ".join(map(str, differences))
            )
        return None

    def downgrade_step_by_step(self) -> None:
        problems: list[str] = []
        for revision in reversed(self.order):
            started = time.perf_counter()
            below = self.down(revision)
            try:
                self.alembic("downgrade", below)
            except Exception as exc:
                raise _Failed(
                    f"revision {revision} failed to downgrade: {error_line(exc)}"
                ) from exc
            expected = self.snapshots[below] if below != "base" else Snapshot()
            differences = compare(self.snapshot(), expected)
            if differences:
                problems.append(
                    f"revision {revision}'s downgrade does not leave the schema of {below}: "
                    + "; ".join(map(str, differences))
                )
            self.emit("revision", check=DOWNGRADE, revision=revision, below=below,
                      seconds=time.perf_counter() - started, ok=not differences)  # fmt: skip
            if differences:
                # Later steps would only repeat this trace.
                break
        if problems:
            raise _Failed(*problems)

    def upgrade_again(self) -> None:
        try:
            self.alembic("upgrade", "heads")
        except Exception as exc:
            raise _Failed(f"the upgrade to head failed: {error_line(exc)}") from exc
        differences = compare(self.snapshot(), self.snapshots[self.order[-1]])
        if differences:
            raise _Failed(
                "the schema at head differs from the first upgrade: "
                + "; ".join(map(str, differences))
            )


def ledger_problems(
    scripts: ScriptDirectory, ledger: Ledger, dialect: str, replayed: dict[str, Snapshot]
) -> list[str]:
    """Return how the ledger differs from this run: checksums, links and schemas."""
    problems = list(ledger.stale_reasons(scripts, dialect))
    if problems:
        return problems
    digests = ledger.digests(dialect)
    for revision in revision_order(scripts):
        if digests.get(revision) != replayed[revision].digest():
            recorded = ledger.schemas(scripts, dialect)[revision]
            problems.append(
                f"revision {revision}'s recorded {dialect} schema differs from this run: "
                + "; ".join(map(str, compare(replayed[revision], recorded)))
            )
    return problems


def verify(
    url: sa.URL,
    config: Config,
    *,
    keep: bool = False,
    update_ledger: bool = False,
    extra_schemas: Callable[[], dict[str, dict[str, Snapshot]]] | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run every check on a scratch database beside ``url``; return the report.

    With ``update_ledger``, the ledger is rewritten from this run (plus
    ``extra_schemas()``, schemas replayed on other dialects) instead of
    failing check 7.
    """
    scripts = ScriptDirectory.from_config(config)
    results: list[CheckResult] = []
    dialect = url.get_backend_name()

    @contextmanager
    def check(name: str) -> Iterator[None]:
        emit_start(name)
        started = time.perf_counter()
        try:
            yield
        except _Failed as failure:
            results.append(
                CheckResult(name, FAILED, time.perf_counter() - started, failure.problems)
            )
        else:
            results.append(CheckResult(name, PASSED, time.perf_counter() - started))
        if progress:
            progress("check_end", {"result": results[-1]})

    def emit_start(name: str) -> None:
        if progress:
            progress("check_start", {"name": name, "title": TITLES[name]})

    def skip(*names: str) -> None:
        for name in names:
            results.append(CheckResult(name, SKIPPED))
            if progress:
                progress("check_end", {"result": results[-1]})

    def failed(name: str) -> bool:
        return any(r.name == name and r.status == FAILED for r in results)

    with check(SINGLE_HEAD):
        chain = check_chain(scripts)
        if chain:
            raise _Failed(*chain)
    ledger_written = False
    scratch_shown = ""
    if failed(SINGLE_HEAD):
        skip(UPGRADE, MODELS_MATCH_DDL, DOWNGRADE, UPGRADE_AGAIN, IDEMPOTENT, LEDGER_FRESH)
        return VerifyReport(dialect=dialect, scratch="", checks=tuple(results))

    with scratch_database(url, keep=keep) as scratch_url:
        scratch_shown = safe_url(scratch_url)
        if progress:
            progress("scratch", {"url": scratch_shown, "keep": keep})
        engine = create_engine(scratch_url)
        try:
            with engine.connect() as connection:
                run = _Run(connection, config, progress)
                not_idempotent: list[str] = []
                with check(UPGRADE):
                    not_idempotent = run.upgrade_step_by_step()
                if failed(UPGRADE):
                    skip(MODELS_MATCH_DDL, DOWNGRADE, UPGRADE_AGAIN, IDEMPOTENT, LEDGER_FRESH)
                else:
                    with check(MODELS_MATCH_DDL):
                        problems = model_differences(
                            run.snapshots[run.order[-1]], models_schema(scratch_url)
                        )
                        if problems:
                            raise _Failed(*problems)
                    with check(DOWNGRADE):
                        run.downgrade_step_by_step()
                    with check(UPGRADE_AGAIN):
                        run.upgrade_again()
                    with check(IDEMPOTENT):
                        if not_idempotent:
                            raise _Failed(*not_idempotent)
                    ledger = Ledger.load(ledger_path(scripts))
                    if update_ledger:
                        emit_start(LEDGER_FRESH)
                        recorded = {
                            dialect: run.snapshots,
                            **(extra_schemas() if extra_schemas else {}),
                        }
                        new = ledger.with_schemas(scripts, recorded)
                        if new != ledger:
                            new.write(ledger_path(scripts))
                            ledger_written = True
                        results.append(CheckResult(LEDGER_FRESH, UPDATED))
                        if progress:
                            progress("check_end", {"result": results[-1]})
                    else:
                        with check(LEDGER_FRESH):
                            problems = ledger_problems(scripts, ledger, dialect, run.snapshots)
                            if problems:
                                raise _Failed(
                                    *problems,
                                    "regenerate it with `manage.py alembic_verify --update-ledger`",
                                )
                config.attributes.pop("connection", None)
        finally:
            engine.dispose()
    return VerifyReport(
        dialect=dialect, scratch=scratch_shown, checks=tuple(results), ledger_written=ledger_written
    )


__all__ = [
    "CheckResult",
    "VerifyReport",
    "check_chain",
    "model_differences",
    "models_schema",
    "verify",
]
