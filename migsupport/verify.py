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
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
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


def model_differences(connection: sa.Connection) -> list[str]:
    """Return how the models (through the bridge) differ from the live DDL.

    Each line names the model field that has no migration, or the DDL that
    has no model, using Alembic's ``compare_metadata`` plus ENUM labels.
    """
    metadata = bridge.build_metadata()
    context = MigrationContext.configure(connection, opts=bridge.comparison_options())
    fields = _fields_by_column()
    problems = [_describe(diff, fields) for diff in _flatten(compare_metadata(context, metadata))]
    problems = [p for p in problems if p]
    live = take_snapshot(connection)
    for name, labels in sorted(_model_enums(metadata).items()):
        have = live.enums.get(name)
        if connection.dialect.name != "postgresql":
            continue
        if have is None:
            problems.append(f"enum {name}: no migration creates it (labels {','.join(labels)})")
        elif list(have) != list(labels):
            problems.append(
                f"enum {name}: the migrations give labels {','.join(have)}, "
                f"the models say {','.join(labels)}"
            )
    return problems


def _model_enums(metadata: sa.MetaData) -> dict[str, list[str]]:
    enums: dict[str, list[str]] = {}
    for table in metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, sa.Enum) and column.type.native_enum and column.type.name:
                enums[column.type.name] = list(column.type.enums)
    return enums


def _fields_by_column() -> dict[tuple[str, str], str]:
    result = {}
    for model in bridge.owned_models():
        for model_field in model._meta.local_concrete_fields:
            result[(model._meta.db_table, model_field.column)] = (
                f"{model._meta.label}.{model_field.name}"
            )
    return result


def _flatten(diffs: list[Any]) -> Iterator[tuple]:
    for diff in diffs:
        if isinstance(diff, list):
            yield from diff
        elif isinstance(diff, tuple):
            yield diff
        # alembic-postgresql-enum's ENUM operations come as tuples too.


def _describe(diff: tuple, fields: dict[tuple[str, str], str]) -> str | None:
    kind = diff[0]
    if kind == "drop_enum":
        return f"enum {diff[1]}: the migrations create it, but no model uses it"
    if "enum" in kind:
        # A model ENUM missing or with other labels: the explicit label
        # comparison in model_differences says it once, plainly.
        return None
    if kind in ("add_table", "remove_table"):
        table = diff[1]
        if kind == "add_table":
            return f"table {table.name}: the models define it, but no migration creates it"
        return f"table {table.name}: the migrations create it, but no model defines it"
    if kind in ("add_column", "remove_column"):
        table, column = diff[2], diff[3]
        if kind == "add_column":
            owner = fields.get((table, column.name), f"column {table}.{column.name}")
            return f"{owner}: no migration creates column {table}.{column.name}"
        return f"column {table}.{column.name}: the migrations create it, but no model field maps it"
    if kind in ("modify_type", "modify_nullable", "modify_default"):
        table, column = diff[2], diff[3]
        owner = fields.get((table, column), f"column {table}.{column}")
        existing, wanted = diff[5], diff[6]
        what = {
            "modify_type": "type",
            "modify_nullable": "nullability",
            "modify_default": "default",
        }
        if kind == "modify_nullable":
            existing = "NULL" if existing else "NOT NULL"
            wanted = "NULL" if wanted else "NOT NULL"
        elif kind == "modify_default":
            existing = getattr(existing, "arg", existing)
            wanted = getattr(wanted, "arg", wanted)
        return (
            f"{owner}: {what[kind]} differs; the migrations give {existing}, "
            f"the model says {wanted}"
        )
    if kind in ("add_index", "remove_index"):
        index = diff[1]
        columns = ", ".join(c.name for c in index.columns) or "expressions"
        if kind == "add_index":
            return (
                f"index {index.name} on {index.table.name} ({columns}): the models define it, "
                "but no migration creates it"
            )
        return f"index {index.name}: the migrations create it, but no model defines it"
    if kind in ("add_fk", "remove_fk", "add_constraint", "remove_constraint"):
        constraint = diff[1]
        table = constraint.table.name if constraint.table is not None else "?"
        side = "the models define it, but no migration creates it"
        if kind.startswith("remove"):
            side = "the migrations create it, but no model defines it"
        return f"{type(constraint).__name__} {constraint.name or ''} on {table}: {side}".replace(
            "  ", " "
        )
    return f"{kind}: {diff[1:]}"


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
        snapshot = take_snapshot(self.connection)
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
                + "; ".join(differences)
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
                    + "; ".join(differences)
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
                "the schema at head differs from the first upgrade: " + "; ".join(differences)
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
                + "; ".join(compare(replayed[revision], recorded))
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
                        problems = model_differences(connection)
                        connection.rollback()
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


__all__ = ["CheckResult", "VerifyReport", "check_chain", "model_differences", "verify"]
