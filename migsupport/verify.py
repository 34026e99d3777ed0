"""Clean-database verification of the migration history, as a list of checks.

What a careful release manager checks by hand before each release, run
mechanically; each check is one entry of :data:`CHECKS` (a name, a title, a
function, and the checks it requires), in the way pytest-alembic makes each
check one named test:

1. a single head, and an intact chain;
2. no revision takes a lock that blocks production (squawk, on each
   revision's offline SQL);
3. the upgrade from empty to head, one revision at a time, on a scratch
   database;
4. running each revision twice is safe: applied again over its own schema,
   it succeeds and changes nothing (done during the upgrade);
5. the models (through the bridge) equal the DDL at head;
6. the downgrade to base, one revision at a time, each step leaving exactly
   the schema of the revision below;
7. the upgrade to head again;
8. the ledger is fresh.

A check whose required check did not pass is skipped, and says why: after a
revision that is not safe to apply twice, the scratch database holds what the
second application made of it, so the checks that read it are not run on it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util.exc import CommandError as AlembicCommandError

from migsupport import bridge
from migsupport.engine import create_engine, error_line, safe_url
from migsupport.events import (
    CheckFinished,
    CheckStarted,
    Progress,
    RevisionChecked,
    ScratchCreated,
    emit,
)
from migsupport.history import migrate, offline_sql
from migsupport.ledger import Ledger, ledger_path, revision_order
from migsupport.scratch import scratch_database
from migsupport.snapshot import Snapshot, compare, take_snapshot

SINGLE_HEAD = "single_head"
LOCK_SAFETY = "lock_safety"
UPGRADE = "upgrade"
IDEMPOTENT = "idempotent"
MODELS_MATCH_DDL = "models_match_ddl"
DOWNGRADE = "downgrade"
UPGRADE_AGAIN = "upgrade_again"
LEDGER_FRESH = "ledger_fresh"

PASSED, FAILED, SKIPPED, UPDATED = "passed", "failed", "skipped", "updated"


@dataclass(frozen=True)
class CheckResult:
    """One check: its outcome, how long it took, what went wrong, and what else it noted.

    ``reason`` says why a skipped check did not run; ``notes`` are what a
    passing check wants seen (e.g. a lock-safety exception a revision declares).
    """

    name: str
    status: str
    seconds: float = 0.0
    problems: tuple[str, ...] = ()
    reason: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return BY_NAME[self.name].title

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "seconds": round(self.seconds, 6),
            "problems": list(self.problems),
            "reason": self.reason,
            "notes": list(self.notes),
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


class Failed(Exception):
    """A check found problems; raising it ends that check as failed."""

    def __init__(self, *problems: str) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Outcome:
    """What a check that did not fail reports: its status, and its notes."""

    status: str = PASSED
    notes: tuple[str, ...] = ()


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


class Verification:
    """What the checks of one run share: the history, the scratch database, what they found.

    The scratch database is made when the first check that needs it runs.
    """

    def __init__(
        self,
        url: sa.URL,
        config: Config,
        *,
        keep: bool,
        update_ledger: bool,
        extra_schemas: Callable[[], Mapping[str, Mapping[str, Snapshot]]] | None,
        progress: Progress | None,
        stack: contextlib.ExitStack,
    ) -> None:
        self.url = url
        self.dialect = url.get_backend_name()
        self.config = config
        self.scripts = ScriptDirectory.from_config(config)
        self.keep = keep
        self.update_ledger = update_ledger
        self.extra_schemas = extra_schemas
        self.progress = progress
        self.stack = stack
        self.scratch_url: sa.URL | None = None
        self._connection: sa.Connection | None = None
        self.snapshots: dict[str, Snapshot] = {}
        self.not_idempotent: list[str] = []
        self.ledger_written = False

    @property
    def order(self) -> list[str]:
        return revision_order(self.scripts)

    @property
    def connection(self) -> sa.Connection:
        """Return the scratch database's connection, making the database on first use."""
        if self._connection is None:
            self.scratch_url = self.stack.enter_context(scratch_database(self.url, keep=self.keep))
            emit(self.progress, ScratchCreated(url=safe_url(self.scratch_url), keep=self.keep))
            engine = create_engine(self.scratch_url)
            self.stack.callback(engine.dispose)
            self._connection = self.stack.enter_context(engine.connect())
            self.stack.callback(self.config.attributes.pop, "connection", None)
        return self._connection

    def emit(self, event: Any) -> None:
        emit(self.progress, event)

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

    def upgrade_step_by_step(self) -> None:
        """Upgrade one revision at a time, and apply each a second time (the idempotence check)."""
        for revision in self.order:
            started = time.perf_counter()
            try:
                self.alembic("upgrade", revision)
            except Exception as exc:
                raise Failed(f"revision {revision} failed to upgrade: {error_line(exc)}") from exc
            applied = self.snapshot()
            self.snapshots[revision] = applied
            twice = self._apply_twice(revision, applied)
            if twice:
                self.not_idempotent.append(twice)
            # The upgrade itself worked; the second application is the idempotence check's.
            self.emit(
                RevisionChecked(
                    check=UPGRADE,
                    revision=revision,
                    seconds=time.perf_counter() - started,
                    ok=True,
                    idempotent=not twice,
                )
            )

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
                raise Failed(f"revision {revision} failed to downgrade: {error_line(exc)}") from exc
            expected = self.snapshots[below] if below != "base" else Snapshot()
            differences = compare(self.snapshot(), expected)
            if differences:
                problems.append(
                    f"revision {revision}'s downgrade does not leave the schema of {below}: "
                    + "; ".join(map(str, differences))
                )
            self.emit(
                RevisionChecked(
                    check=DOWNGRADE,
                    revision=revision,
                    below=below,
                    seconds=time.perf_counter() - started,
                    ok=not differences,
                )
            )
            if differences:
                # Later steps would only repeat this trace.
                break
        if problems:
            raise Failed(*problems)

    def upgrade_again(self) -> None:
        try:
            self.alembic("upgrade", "heads")
        except Exception as exc:
            raise Failed(f"the upgrade to head failed: {error_line(exc)}") from exc
        differences = compare(self.snapshot(), self.snapshots[self.order[-1]])
        if differences:
            raise Failed(
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


# -- the checks ------------------------------------------------------------------------------

# squawk's rules that do not say "this blocks production": style advice, and the
# timeout rules, which the executor satisfies for every revision (it sets
# lock_timeout and, if asked, statement_timeout on the session).
SQUAWK_EXCLUDED = (
    "prefer-text-field",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
    "prefer-robust-stmts",
    "prefer-timestamptz",
    "ban-char-field",
    "identifier-too-long",
    "require-enum-value-ordering",
    "require-timeout-settings",
    "require-lock-timeout",
    "require-statement-timeout",
)
# Where a revision declares the squawk findings it was reviewed for: {rule: reason}.
EXCEPTIONS_ATTRIBUTE = "lock_safety_exceptions"
# The "rule" a revision names when its SQL cannot be printed offline (it reads the database).
OFFLINE_RULE = "offline-sql"


def squawk_executable() -> str | None:
    """Return the squawk binary: beside this interpreter (the virtualenv's), or on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    return str(beside) if beside.exists() else shutil.which("squawk")


def lock_safety(scripts: ScriptDirectory, config: Config) -> tuple[list[str], list[str]]:
    """Lint each revision's offline PostgreSQL SQL with squawk; return (problems, notes).

    A finding whose rule the revision lists in ``lock_safety_exceptions``
    (``{rule: reason}``) is a note, not a problem.
    """
    executable = squawk_executable()
    if executable is None:
        return ["squawk is not installed: pip install squawk-cli (it is in requirements.txt)"], []
    problems: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="migsupport_lint_") as folder:
        files: dict[str, str] = {}
        for revision in revision_order(scripts):
            script = scripts.get_revision(revision)
            down = script.down_revision
            start = down[0] if isinstance(down, (tuple, list)) else down
            declared = getattr(script.module, EXCEPTIONS_ATTRIBUTE, {}) or {}
            try:
                sql = offline_sql(config, scripts, start, revision, url="postgresql://")
            except Exception as exc:
                # It reads the database as it runs: there is no SQL to lint.
                where = f"revision {revision}: {OFFLINE_RULE}"
                if OFFLINE_RULE in declared:
                    notes.append(f"{where} allowed by the revision: {declared[OFFLINE_RULE]}")
                else:
                    problems.append(
                        f"{where}: its SQL cannot be printed offline, so squawk cannot lint it "
                        f"({type(exc).__name__}: {error_line(exc)})"
                    )
                continue
            path = Path(folder) / f"{revision}.sql"
            path.write_text(sql)
            files[str(path)] = revision
        result = subprocess.run(
            [executable, "--reporter", "json", "--exclude", ",".join(SQUAWK_EXCLUDED), *files],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            findings = json.loads(result.stdout or "[]")
        except ValueError:
            first = (result.stderr.strip().splitlines() or ["no output"])[0]
            return [f"squawk failed: {first}"], []
        texts = {path: Path(path).read_text().splitlines() for path in files}
    for finding in findings:
        revision = files.get(finding.get("file"), finding.get("file"))
        rule = finding.get("rule_name")
        declared = getattr(scripts.get_revision(revision).module, EXCEPTIONS_ATTRIBUTE, {}) or {}
        lines = texts.get(finding.get("file"), [])
        line = finding.get("line", 0)
        statement = lines[line].strip() if 0 <= line < len(lines) else ""
        where = f"revision {revision}, line {line + 1}"
        if rule in declared:
            notes.append(f"{where}: {rule} allowed by the revision: {declared[rule]}")
        else:
            problems.append(f"{where}: {rule}: {finding.get('message')} ({statement})")
    return problems, notes


def _single_head(run: Verification) -> Outcome | None:
    chain = check_chain(run.scripts)
    if chain:
        raise Failed(*chain)
    return None


def _lock_safety(run: Verification) -> Outcome | None:
    problems, notes = lock_safety(run.scripts, run.config)
    if problems:
        raise Failed(
            *problems,
            f"make the step safe, or declare a reviewed exception in the revision: "
            f"{EXCEPTIONS_ATTRIBUTE} = {{'rule': 'why it is safe here'}}",
        )
    return Outcome(notes=tuple(notes))


def _upgrade(run: Verification) -> Outcome | None:
    run.upgrade_step_by_step()
    return None


def _idempotent(run: Verification) -> Outcome | None:
    if run.not_idempotent:
        raise Failed(*run.not_idempotent)
    return None


def _models_match_ddl(run: Verification) -> Outcome | None:
    scratch = run.scratch_url
    assert scratch is not None
    problems = model_differences(run.snapshots[run.order[-1]], models_schema(scratch))
    if problems:
        raise Failed(*problems)
    return None


def _downgrade(run: Verification) -> Outcome | None:
    run.downgrade_step_by_step()
    return None


def _upgrade_again(run: Verification) -> Outcome | None:
    run.upgrade_again()
    return None


def _ledger_fresh(run: Verification) -> Outcome | None:
    ledger = Ledger.load(ledger_path(run.scripts))
    if run.update_ledger:
        recorded = {
            run.dialect: run.snapshots,
            **(run.extra_schemas() if run.extra_schemas else {}),
        }
        new = ledger.with_schemas(run.scripts, recorded)
        if new != ledger:
            new.write(ledger_path(run.scripts))
            run.ledger_written = True
        return Outcome(status=UPDATED)
    problems = ledger_problems(run.scripts, ledger, run.dialect, run.snapshots)
    if problems:
        raise Failed(*problems, "regenerate it with `manage.py alembic_verify --update-ledger`")
    return None


@dataclass(frozen=True)
class Check:
    """One check: its name, its title, what it runs, and the checks it needs to have passed.

    ``scratch``: it works on the scratch database (made when the first such check runs).
    """

    name: str
    title: str
    run: Callable[[Verification], Outcome | None]
    requires: tuple[str, ...] = ()
    scratch: bool = True


CHECKS: tuple[Check, ...] = (
    Check(SINGLE_HEAD, "single head and an intact chain", _single_head, scratch=False),
    Check(
        LOCK_SAFETY,
        "no revision takes a lock that blocks production (squawk)",
        _lock_safety,
        requires=(SINGLE_HEAD,),
        scratch=False,
    ),
    Check(
        UPGRADE,
        "upgrade from empty to head, one revision at a time",
        _upgrade,
        requires=(SINGLE_HEAD,),
    ),
    Check(IDEMPOTENT, "running each revision twice is safe", _idempotent, requires=(UPGRADE,)),
    Check(
        MODELS_MATCH_DDL,
        "models equal the DDL at head",
        _models_match_ddl,
        requires=(UPGRADE, IDEMPOTENT),
    ),
    Check(
        DOWNGRADE,
        "downgrade to base, one revision at a time, leaving no trace",
        _downgrade,
        requires=(UPGRADE, IDEMPOTENT),
    ),
    Check(UPGRADE_AGAIN, "upgrade to head again", _upgrade_again, requires=(DOWNGRADE,)),
    Check(LEDGER_FRESH, "the ledger is fresh", _ledger_fresh, requires=(UPGRADE,)),
)
BY_NAME = {check.name: check for check in CHECKS}
# Kept for the commands and the tests: each check's title, by name.
TITLES = {check.name: check.title for check in CHECKS}


def run_checks(run: Verification, checks: tuple[Check, ...] = CHECKS) -> list[CheckResult]:
    """Run ``checks`` in order on ``run``, honouring ``requires``; return their results."""
    results: dict[str, CheckResult] = {}
    for check in checks:
        emit(run.progress, CheckStarted(name=check.name, title=check.title))
        unmet = [
            name
            for name in check.requires
            if results.get(name) is None or results[name].status not in (PASSED, UPDATED)
        ]
        if unmet:
            failed = results.get(unmet[0])
            how = "failed" if failed is not None and failed.status == FAILED else "did not run"
            result = CheckResult(
                check.name, SKIPPED, reason=f"it needs {TITLES[unmet[0]]!r}, which {how}"
            )
        else:
            started = time.perf_counter()
            if check.scratch:
                run.connection  # noqa: B018 - made now, before the check's clock matters
            try:
                outcome = check.run(run) or Outcome()
            except Failed as failure:
                result = CheckResult(
                    check.name, FAILED, time.perf_counter() - started, failure.problems
                )
            else:
                result = CheckResult(
                    check.name,
                    outcome.status,
                    time.perf_counter() - started,
                    notes=outcome.notes,
                )
        results[check.name] = result
        emit(run.progress, CheckFinished(result=result))
    return list(results.values())


def verify(
    url: sa.URL,
    config: Config,
    *,
    keep: bool = False,
    update_ledger: bool = False,
    extra_schemas: Callable[[], Mapping[str, Mapping[str, Snapshot]]] | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Run every check (:data:`CHECKS`) beside ``url``; return the report.

    The scratch database is dropped afterwards, whatever happens, unless
    ``keep``. With ``update_ledger``, the ledger is rewritten from this run
    (plus ``extra_schemas()``, schemas replayed on other dialects) instead of
    being checked.
    """
    with contextlib.ExitStack() as stack:
        run = Verification(
            url,
            config,
            keep=keep,
            update_ledger=update_ledger,
            extra_schemas=extra_schemas,
            progress=progress,
            stack=stack,
        )
        results = run_checks(run)
        scratch = safe_url(run.scratch_url) if run.scratch_url is not None else ""
    return VerifyReport(
        dialect=run.dialect,
        scratch=scratch,
        checks=tuple(results),
        ledger_written=run.ledger_written,
    )


__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Failed",
    "Outcome",
    "Verification",
    "VerifyReport",
    "check_chain",
    "lock_safety",
    "model_differences",
    "models_schema",
    "run_checks",
    "verify",
]
