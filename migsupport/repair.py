"""Converge a drifted database to a revision by safe steps, proven, or change nothing.

Each :class:`~migsupport.differences.Difference` between the live schema and
the target revision's maps to a :class:`Fix` from a fixed catalog, or to
"needs a person", with the reason. Safe means that no data is lost and that
no long lock is taken on a large table: a missing index is built
concurrently, a constraint is added ``NOT VALID`` and validated apart, a
column is only added where PostgreSQL adds it without rewriting the table.
Removing an unexpected trigger, rule or policy changes what the database
does, so it needs ``--allow-behaviour-changes``.

A plan is all or nothing: if any fix needs a person, nothing is done. When
it is carried out, in phases:

1. ``build``: indexes are built concurrently, outside any transaction;
2. ``change``: every other change runs in one transaction, and the schema is
   compared with the target inside it, before it commits: a failed proof
   rolls it back and drops what was built concurrently;
3. ``validate``: constraints added ``NOT VALID`` are validated, each in a
   transaction of its own (``SHARE UPDATE EXCLUSIVE``: reads and writes go on);

and the result is proven once more. Repair never stamps: a drifted database
reads ``up_to_date`` or ``behind`` afterwards, and an unversioned one equals
the target, which ``alembic_upgrade`` then baselines.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from migsupport.differences import CHANGED, MISSING, UNEXPECTED, Difference
from migsupport.exceptions import Refused
from migsupport.snapshot import Snapshot, compare
from migsupport.state import DRIFTED, UNVERSIONED, StateReport

SAFE = "safe"
PERSON = "needs a person"
BEHAVIOUR = "changes behaviour"

BUILD, CHANGE, VALIDATE = "build", "change", "validate"
PHASES = (BUILD, CHANGE, VALIDATE)

# Where PostgreSQL widens a type in place, without rewriting the table.
_VARCHAR = r"VARCHAR\((\d+)\)"
_VOLATILE = ("nextval(", "random(", "gen_random_uuid(", "uuid_generate", "clock_timestamp(")


# The order of the statements in the transaction: what others depend on first.
FIRST, TYPES, TABLES, COLUMNS, DROPS, KEYS, CHECKS, FOREIGN_KEYS, BEHAVIOURS = range(9)


@dataclass(frozen=True)
class Step:
    """One statement of a fix, and the phase it runs in; ``undo`` takes a build back.

    ``order`` places it within its phase: types before the tables that use
    them, keys before the foreign keys that refer to them.
    """

    sql: str
    phase: str = CHANGE
    undo: str | None = None
    order: int = COLUMNS


@dataclass(frozen=True)
class Fix:
    """What repair does about one difference, or why it does not."""

    difference: Difference
    action: str
    steps: tuple[Step, ...] = ()
    verdict: str = SAFE
    reason: str | None = None
    # Objects the fix makes for a while and drops again (a check that lets SET NOT NULL skip
    # its scan): the proof inside the transaction expects them there.
    temporary: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "difference": self.difference.to_dict(),
            "action": self.action,
            "verdict": self.verdict,
            "reason": self.reason,
            "steps": [{"phase": s.phase, "sql": s.sql} for s in self.steps],
        }


@dataclass(frozen=True)
class RepairPlan:
    """The fixes that take a database to ``target``, and why that revision."""

    report: StateReport
    target: str | None
    why: str
    fixes: tuple[Fix, ...] = ()
    allow_behaviour_changes: bool = False

    @property
    def blocked(self) -> tuple[Fix, ...]:
        """The fixes that stop the plan: a person's, or a behaviour change not allowed."""
        return tuple(
            fix
            for fix in self.fixes
            if fix.verdict == PERSON
            or (fix.verdict == BEHAVIOUR and not self.allow_behaviour_changes)
        )

    @property
    def needed(self) -> bool:
        return self.target is not None and bool(self.fixes)

    def steps(self, phase: str) -> list[Step]:
        found = [step for fix in self.fixes for step in fix.steps if step.phase == phase]
        return sorted(found, key=lambda step: step.order)

    def sql(self) -> str:
        """Return the plan's statements, phase by phase, for review (``--sql``)."""
        lines = [f"-- Repair to {self.target}: {self.why}."]
        titles = {
            BUILD: "Concurrent builds, outside any transaction.",
            CHANGE: "One transaction, proven against the target before it commits.",
            VALIDATE: "Validations, each in a transaction of its own.",
        }
        for phase in PHASES:
            steps = self.steps(phase)
            if not steps:
                continue
            lines.append(f"-- {titles[phase]}")
            if phase == CHANGE:
                lines.append("BEGIN;")
            lines += [f"{step.sql};" for step in steps]
            if phase == CHANGE:
                lines.append("COMMIT;")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.report.state,
            "current": self.report.current,
            "target": self.target,
            "why": self.why,
            "repairable": not self.blocked,
            "fixes": [fix.to_dict() for fix in self.fixes],
        }


class RepairRefused(Refused):
    """The plan has fixes that need a person (or a behaviour change not allowed)."""

    def __init__(self, message: str, plan: RepairPlan) -> None:
        self.plan = plan
        self.state = plan.report.state
        # The command shows the whole plan, each fix with its verdict.
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), **super().to_dict()}


class RepairFailed(Refused):
    """The repair did not converge to the target; what could be rolled back was."""


# -- what a fix's SQL is made of ------------------------------------------------------------


@dataclass
class Context:
    """What the catalog needs to be asked while fixes are chosen (rows, violations)."""

    connection: sa.Connection
    live: Snapshot
    expected: Snapshot
    postgresql: bool
    counts: dict[str, bool] = field(default_factory=dict)

    def quote(self, name: str) -> str:
        return self.connection.dialect.identifier_preparer.quote(name)

    def has_rows(self, table: str) -> bool:
        if table not in self.counts:
            self.counts[table] = bool(
                self.connection.exec_driver_sql(
                    f"SELECT EXISTS (SELECT 1 FROM {self.quote(table)})"
                ).scalar()
            )
        return self.counts[table]

    def count(self, sql: str) -> int:
        try:
            with self.connection.begin_nested():
                return int(self.connection.exec_driver_sql(sql).scalar() or 0)
        except sa.exc.DBAPIError:
            return -1  # the check itself failed: a person looks


def column_sql(ctx: Context, name: str, shape: Mapping[str, Any]) -> str:
    """Return a column definition for ``CREATE TABLE`` or ``ADD COLUMN``, from its shape."""
    parts = [ctx.quote(name), shape["type"]]
    if shape.get("collation"):
        parts.append(f"COLLATE {shape['collation']}")
    if shape.get("generated"):
        expression, _, kind = shape["generated"].rpartition(" ")
        parts.append(f"GENERATED ALWAYS AS ({expression}) {kind}")
    if shape.get("identity"):
        parts.append(f"GENERATED {shape['identity'].upper()} AS IDENTITY")
    if not shape.get("nullable", True):
        parts.append("NOT NULL")
    if shape.get("default") is not None:
        parts.append(f"DEFAULT {shape['default']}")
    return " ".join(parts)


def index_sql(
    ctx: Context, name: str, table: str, shape: Mapping[str, Any], *, concurrently: bool
) -> str:
    """Return the ``CREATE INDEX`` of an index's shape."""
    unique = "UNIQUE " if shape.get("unique") else ""
    how = "CONCURRENTLY " if concurrently and ctx.postgresql else ""
    using = f" USING {shape['method']}" if shape.get("method") and ctx.postgresql else ""
    sql = f"CREATE {unique}INDEX {how}{ctx.quote(name)} ON {ctx.quote(table)}{using}"
    sql += f" ({', '.join(shape['keys'])})"
    if shape.get("include"):
        sql += f" INCLUDE ({', '.join(shape['include'])})"
    if shape.get("nulls_not_distinct"):
        sql += " NULLS NOT DISTINCT"
    if shape.get("predicate"):
        sql += f" WHERE {shape['predicate']}"
    return sql


def _definition(shape: Mapping[str, Any]) -> str:
    """Return a constraint's definition, without its ``NOT VALID``."""
    definition = shape["definition"]
    return definition[: -len(" NOT VALID")] if definition.endswith(" NOT VALID") else definition


def policy_sql(ctx: Context, name: str, table: str, shape: Mapping[str, Any]) -> str:
    kind = "PERMISSIVE" if shape.get("permissive", True) else "RESTRICTIVE"
    roles = ", ".join(shape.get("roles") or ["public"])
    sql = f"CREATE POLICY {ctx.quote(name)} ON {ctx.quote(table)} AS {kind} "
    sql += f"FOR {shape.get('command', 'ALL')} TO {roles}"
    if shape.get("using"):
        sql += f" USING ({shape['using']})"
    if shape.get("with_check"):
        sql += f" WITH CHECK ({shape['with_check']})"
    return sql


def table_sql(ctx: Context, name: str, shape: Mapping[str, Any]) -> list[str]:
    """Return the statements that create a table of ``shape``, empty, with all it holds."""
    columns = [column_sql(ctx, column, s) for column, s in shape["columns"].items()]
    constraints = []
    for constraint, s in shape.get("constraints", {}).items():
        if ctx.postgresql:
            constraints.append(f"CONSTRAINT {ctx.quote(constraint)} {_definition(s)}")
        elif s["type"] == "check":
            constraints.append(s["definition"])
        elif s["type"] in ("primary key", "unique"):
            keyword = "PRIMARY KEY" if s["type"] == "primary key" else "UNIQUE"
            constraints.append(f"{keyword} ({', '.join(map(ctx.quote, s['columns']))})")
        elif s["type"] == "foreign key":
            constraints.append(
                f"FOREIGN KEY ({', '.join(map(ctx.quote, s['columns']))}) REFERENCES "
                f"{ctx.quote(s['references'])} ({', '.join(map(ctx.quote, s['referred_columns']))})"
                f" ON DELETE {s['on_delete'].upper()} ON UPDATE {s['on_update'].upper()}"
            )
    unlogged = "UNLOGGED " if shape.get("persistence") == "unlogged" else ""
    statements = [f"CREATE {unlogged}TABLE {ctx.quote(name)} ({', '.join(columns + constraints)})"]
    for index, s in shape.get("indexes", {}).items():
        statements.append(index_sql(ctx, index, name, s, concurrently=False))
    for trigger in shape.get("triggers", {}).values():
        statements.append(trigger["definition"])
    for rule in shape.get("rules", {}).values():
        statements.append(rule["definition"].rstrip(";"))
    if shape.get("row_security"):
        statements.append(f"ALTER TABLE {ctx.quote(name)} ENABLE ROW LEVEL SECURITY")
    if shape.get("force_row_security"):
        statements.append(f"ALTER TABLE {ctx.quote(name)} FORCE ROW LEVEL SECURITY")
    for policy, s in shape.get("policies", {}).items():
        statements.append(policy_sql(ctx, policy, name, s))
    return statements


# -- the catalog of fixes -----------------------------------------------------------------


def _person(difference: Difference, reason: str) -> Fix:
    return Fix(difference, "none", verdict=PERSON, reason=reason)


def _widens(have: str, want: str) -> bool:
    """Whether PostgreSQL changes ``have`` to ``want`` in place (no rewrite, no data lost)."""
    import re

    a, b = re.fullmatch(_VARCHAR, have), re.fullmatch(_VARCHAR, want)
    if a and b:
        return int(b[1]) >= int(a[1])
    if a and want == "TEXT":
        return True
    numeric = r"NUMERIC\((\d+),(\d+)\)"
    a, b = re.fullmatch(numeric, have), re.fullmatch(numeric, want)
    return bool(a and b and a[2] == b[2] and int(b[1]) >= int(a[1]))


def fix_for(ctx: Context, difference: Difference) -> Fix:
    """Return the fix of ``difference``, or why it needs a person."""
    obj = difference.object
    kind, word = difference.kind, obj.type
    if word == "enum":
        return _enum(ctx, difference)
    if word == "table":
        return _table(ctx, difference)
    if word == "column":
        return _column(ctx, difference)
    if word == "index":
        return _index(ctx, difference)
    if word in ("primary key", "unique constraint", "check constraint", "foreign key",
                "exclusion constraint", "constraint"):  # fmt: skip
        return _constraint(ctx, difference)
    if word in ("trigger", "rule", "policy"):
        return _behaviour(ctx, difference)
    if word in ("function", "sequence", "domain", "extension") and kind == MISSING:
        return _create_object(ctx, difference)
    return _person(difference, f"the repair catalog has no safe fix for a {word} that is {kind}")


def _enum(ctx: Context, difference: Difference) -> Fix:
    name = difference.object.name
    quoted = ctx.quote(name)
    if difference.kind == MISSING:
        labels = ", ".join("'" + label.replace("'", "''") + "'" for label in difference.expected)
        return Fix(
            difference, f"create enum {name}", (Step(f"CREATE TYPE {quoted} AS ENUM ({labels})"),)
        )
    if difference.kind == UNEXPECTED:
        return _person(difference, "dropping a type may lose what uses it")
    have, want = list(difference.actual), list(difference.expected)
    # Only labels missing, the others in order: each is added at its position.
    if [label for label in want if label in have] != have:
        return _person(difference, "labels would have to be removed or reordered")
    steps = []
    for position, label in enumerate(want):
        if label in have:
            continue
        literal = "'" + label.replace("'", "''") + "'"
        if position > 0:
            anchor = "'" + want[position - 1].replace("'", "''") + "'"
            steps.append(
                Step(f"ALTER TYPE {quoted} ADD VALUE {literal} AFTER {anchor}", order=TYPES)
            )
        else:
            anchor = "'" + want[1].replace("'", "''") + "'"
            steps.append(
                Step(f"ALTER TYPE {quoted} ADD VALUE {literal} BEFORE {anchor}", order=TYPES)
            )
    added = ", ".join(label for label in want if label not in have)
    return Fix(difference, f"add label {added} to enum {name}", tuple(steps))


def _table(ctx: Context, difference: Difference) -> Fix:
    name = difference.object.name
    if difference.kind == MISSING:
        return Fix(
            difference,
            f"create table {name}",
            tuple(Step(sql, order=TABLES) for sql in table_sql(ctx, name, difference.expected)),
        )
    if difference.kind == UNEXPECTED:
        if ctx.has_rows(name):
            return _person(difference, f"table {name} holds rows; dropping it would lose them")
        return Fix(
            difference, f"drop table {name} (it is empty)", (Step(f"DROP TABLE {ctx.quote(name)}"),)
        )
    prop = difference.property
    quoted = ctx.quote(name)
    if prop in ("row_security", "force_row_security"):
        keyword = "ROW LEVEL SECURITY"
        verb = ("ENABLE" if difference.expected else "DISABLE") if prop == "row_security" else (
            "FORCE" if difference.expected else "NO FORCE"
        )  # fmt: skip
        fix = Fix(difference, f"{verb.lower()} {keyword.lower()} on {name}",
                  (Step(f"ALTER TABLE {quoted} {verb} {keyword}"),))  # fmt: skip
        if not difference.expected:
            return Fix(fix.difference, fix.action, fix.steps, BEHAVIOUR,
                       "it lifts a protection the table has now")  # fmt: skip
        return fix
    if prop == "persistence":
        return _person(difference, "changing a table's persistence rewrites it")
    return _person(difference, f"the repair catalog has no safe fix for a table's {prop}")


def _column(ctx: Context, difference: Difference) -> Fix:
    table, _, column = difference.object.name.partition(".")
    quoted_table, quoted = ctx.quote(table), ctx.quote(column)
    alter = f"ALTER TABLE {quoted_table} ALTER COLUMN {quoted}"
    if difference.kind == MISSING:
        shape = difference.expected
        if not ctx.postgresql and (
            not shape.get("nullable", True) and shape.get("default") is None
        ):
            return _person(difference, "SQLite adds a NOT NULL column only with a default")
        default = shape.get("default") or ""
        volatile = any(word in default for word in _VOLATILE)
        rewrites = volatile or shape.get("generated") or shape.get("identity")
        if rewrites and ctx.has_rows(table):
            return _person(difference, "adding this column rewrites the table (a volatile "
                           "default, an identity or a generated column)")  # fmt: skip
        if not shape.get("nullable", True) and shape.get("default") is None and ctx.has_rows(table):
            return _person(difference, "a NOT NULL column without a default needs values "
                           "for the rows there are")  # fmt: skip
        add = f"ALTER TABLE {quoted_table} ADD COLUMN {column_sql(ctx, column, shape)}"
        return Fix(difference, f"add column {difference.object.name}", (Step(add),))
    if difference.kind == UNEXPECTED:
        if ctx.has_rows(table):
            return _person(difference, f"table {table} holds rows; dropping the column would lose "
                           "its values")  # fmt: skip
        return Fix(difference, f"drop column {difference.object.name} (the table is empty)",
                   (Step(f"ALTER TABLE {quoted_table} DROP COLUMN {quoted}"),))  # fmt: skip
    if not ctx.postgresql:
        return _person(difference, "SQLite cannot change a column without rebuilding its table")
    prop, want, have = difference.property, difference.expected, difference.actual
    if prop == "default":
        sql = f"{alter} DROP DEFAULT" if want is None else f"{alter} SET DEFAULT {want}"
        return Fix(difference, f"{'drop' if want is None else 'set'} the default of "
                   f"{difference.object.name}", (Step(sql),))  # fmt: skip
    if prop == "nullable":
        if want:
            return Fix(difference, f"drop NOT NULL on {difference.object.name}",
                       (Step(f"{alter} DROP NOT NULL"),))  # fmt: skip
        nulls = ctx.count(f"SELECT count(*) FROM {quoted_table} WHERE {quoted} IS NULL")
        if nulls:
            return _person(difference, f"{nulls} rows hold NULL in {difference.object.name}"
                           if nulls > 0 else "the NULLs could not be counted")  # fmt: skip
        name = f"{table[:20]}_{column[:20]}_not_null_{uuid.uuid4().hex[:8]}"
        check = ctx.quote(name)
        # A validated CHECK lets SET NOT NULL skip its scan under ACCESS EXCLUSIVE.
        return Fix(difference, f"set NOT NULL on {difference.object.name} through a validated "
                   "check", (
                       Step(f"ALTER TABLE {quoted_table} ADD CONSTRAINT {check} "
                            f"CHECK ({quoted} IS NOT NULL) NOT VALID"),
                       Step(f"ALTER TABLE {quoted_table} VALIDATE CONSTRAINT {check}", VALIDATE),
                       Step(f"{alter} SET NOT NULL", VALIDATE),
                       Step(f"ALTER TABLE {quoted_table} DROP CONSTRAINT {check}", VALIDATE),
                   ), temporary=(name,))  # fmt: skip
    if prop == "type":
        if _widens(have, want):
            return Fix(difference, f"widen {difference.object.name} to {want}",
                       (Step(f"{alter} TYPE {want}"),))  # fmt: skip
        narrowing = _widens(want, have)
        return _person(difference, "it narrows the type" if narrowing else
                       "changing the type rewrites the table")  # fmt: skip
    return _person(difference, f"changing a column's {prop} rewrites it or its indexes")


def _index(ctx: Context, difference: Difference) -> Fix:
    name, table = difference.object.name, difference.object.table or ""
    quoted = ctx.quote(name)
    drop = f"DROP INDEX {quoted}"
    if difference.kind == MISSING:
        large = ctx.has_rows(table)
        sql = index_sql(ctx, name, table, difference.expected, concurrently=large)
        phase = BUILD if large and ctx.postgresql else CHANGE
        undo = f"DROP INDEX CONCURRENTLY IF EXISTS {quoted}" if phase == BUILD else None
        return Fix(difference, f"create index {name}" + (" concurrently" if phase == BUILD else ""),
                   (Step(sql, phase, undo),))  # fmt: skip
    if difference.kind == UNEXPECTED:
        return Fix(difference, f"drop index {name}", (Step(drop, order=DROPS),))
    expected = ctx.expected.tables[table]["indexes"][name]
    if not ctx.postgresql:
        create = index_sql(ctx, name, table, expected, concurrently=False)
        return Fix(difference, f"re-create index {name}", (Step(drop), Step(create)))
    # Build the new one concurrently, then swap it in, in the transaction.
    temporary = f"{name[:40]}_repair_{uuid.uuid4().hex[:8]}"
    build = index_sql(ctx, temporary, table, expected, concurrently=True)
    return Fix(difference, f"re-create index {name} (build concurrently, then swap)", (
        Step(build, BUILD, f"DROP INDEX CONCURRENTLY IF EXISTS {ctx.quote(temporary)}"),
        Step(drop),
        Step(f"ALTER INDEX {ctx.quote(temporary)} RENAME TO {quoted}"),
    ))  # fmt: skip


def _violations(ctx: Context, table: str, shape: Mapping[str, Any]) -> int:
    """Return how many rows of ``table`` the constraint ``shape`` would reject."""
    quoted = ctx.quote(table)
    if shape["type"] == "foreign key":
        pairs = zip(shape["columns"], shape["referred_columns"], strict=True)
        joined = " AND ".join(f"r.{ctx.quote(r)} = t.{ctx.quote(c)}" for c, r in pairs)
        present = " AND ".join(f"t.{ctx.quote(c)} IS NOT NULL" for c in shape["columns"])
        return ctx.count(
            f"SELECT count(*) FROM {quoted} t WHERE {present} AND NOT EXISTS "
            f"(SELECT 1 FROM {ctx.quote(shape['references'])} r WHERE {joined})"
        )
    if shape["type"] == "check":
        expression = _definition(shape)[len("CHECK ") :]
        return ctx.count(f"SELECT count(*) FROM {quoted} WHERE NOT {expression}")
    columns = ", ".join(ctx.quote(c) for c in shape["columns"])
    nulls = ""
    if shape["type"] == "primary key":
        nulls = " OR ".join(f"{ctx.quote(c)} IS NULL" for c in shape["columns"])
        missing = ctx.count(f"SELECT count(*) FROM {quoted} WHERE {nulls}")
        if missing:
            return missing
    return ctx.count(
        f"SELECT count(*) FROM (SELECT 1 FROM {quoted} WHERE "
        + " AND ".join(f"{ctx.quote(c)} IS NOT NULL" for c in shape["columns"])
        + f" GROUP BY {columns} HAVING count(*) > 1) AS duplicates"
    )


def _constraint(ctx: Context, difference: Difference) -> Fix:
    name, table = difference.object.name, difference.object.table or ""
    quoted_table, quoted = ctx.quote(table), ctx.quote(name)
    drop = Step(f"ALTER TABLE {quoted_table} DROP CONSTRAINT {quoted}", order=DROPS)
    if not ctx.postgresql:
        return _person(difference, "SQLite cannot change a table's constraints without "
                       "rebuilding it")  # fmt: skip
    if difference.kind == UNEXPECTED:
        return Fix(difference, f"drop {difference.object}", (drop,))
    shape = (
        difference.expected
        if difference.kind == MISSING
        else ctx.expected.tables[table]["constraints"][name]
    )
    if shape["type"] == "exclusion":
        return _person(
            difference, "an exclusion constraint is built under a lock that blocks writes"
        )
    if difference.kind == CHANGED and difference.property == "validated":
        rows = _violations(ctx, table, shape)
        if rows:
            return _person(difference, f"{rows} rows violate it" if rows > 0 else
                           "its violations could not be counted")  # fmt: skip
        validate = f"ALTER TABLE {quoted_table} VALIDATE CONSTRAINT {quoted}"
        return Fix(difference, f"validate {difference.object}", (Step(validate, VALIDATE),))
    rows = _violations(ctx, table, shape)
    if rows:
        return _person(difference, f"{rows} rows violate it" if rows > 0 else
                       "its violations could not be counted")  # fmt: skip
    steps = [] if difference.kind == MISSING else [drop]
    if shape["type"] in ("primary key", "unique"):
        # Its index is built concurrently first, then the constraint takes it over.
        index = f"{name[:40]}_repair_{uuid.uuid4().hex[:8]}"
        build = (
            f"CREATE UNIQUE INDEX CONCURRENTLY {ctx.quote(index)} ON {quoted_table} "
            f"({', '.join(ctx.quote(c) for c in shape['columns'])})"
        )
        keyword = "PRIMARY KEY" if shape["type"] == "primary key" else "UNIQUE"
        steps = [
            Step(build, BUILD, f"DROP INDEX CONCURRENTLY IF EXISTS {ctx.quote(index)}"),
            *steps,
            Step(f"ALTER TABLE {quoted_table} ADD CONSTRAINT {quoted} {keyword} "
                 f"USING INDEX {ctx.quote(index)}", order=KEYS),
        ]  # fmt: skip
        return Fix(difference, f"add {difference.object} through a concurrently built index",
                   tuple(steps))  # fmt: skip
    steps += [
        Step(
            f"ALTER TABLE {quoted_table} ADD CONSTRAINT {quoted} {_definition(shape)} NOT VALID",
            order=FOREIGN_KEYS if shape["type"] == "foreign key" else CHECKS,
        ),
        Step(f"ALTER TABLE {quoted_table} VALIDATE CONSTRAINT {quoted}", VALIDATE),
    ]
    verb = "add" if difference.kind == MISSING else "re-create"
    return Fix(difference, f"{verb} {difference.object} NOT VALID, then validate it", tuple(steps))


def _behaviour(ctx: Context, difference: Difference) -> Fix:
    """Triggers, rules and policies: what the database does, not only what it holds."""
    obj = difference.object
    table = ctx.quote(obj.table or "")
    quoted = ctx.quote(obj.name)
    drops = {
        "trigger": f"DROP TRIGGER {quoted} ON {table}",
        "rule": f"DROP RULE {quoted} ON {table}",
        "policy": f"DROP POLICY {quoted} ON {table}",
    }
    if not ctx.postgresql and obj.type == "trigger":
        drops["trigger"] = f"DROP TRIGGER {quoted}"

    def create(shape: Mapping[str, Any]) -> str:
        if obj.type == "policy":
            return policy_sql(ctx, obj.name, obj.table or "", shape)
        return shape["definition"].rstrip(";")

    if difference.kind == UNEXPECTED:
        return Fix(difference, f"drop {obj}", (Step(drops[obj.type]),), BEHAVIOUR,
                   f"removing the {obj.type} changes what the database does")  # fmt: skip
    if difference.kind == MISSING:
        return Fix(difference, f"create {obj}", (Step(create(difference.expected)),))
    shape = ctx.expected.tables[obj.table]  # type: ignore[index]
    wanted = shape[{"trigger": "triggers", "rule": "rules", "policy": "policies"}[obj.type]][
        obj.name
    ]
    if difference.property == "enabled" and obj.type in ("trigger", "rule"):
        verb = {
            "enabled": "ENABLE",
            "disabled": "DISABLE",
            "enabled on replica only": "ENABLE REPLICA",
            "always enabled": "ENABLE ALWAYS",
        }[difference.expected]
        return Fix(difference, f"{verb.lower()} {obj}",
                   (Step(f"ALTER TABLE {table} {verb} {obj.type.upper()} {quoted}"),))  # fmt: skip
    return Fix(difference, f"re-create {obj}", (Step(drops[obj.type]), Step(create(wanted))),
               BEHAVIOUR, f"re-creating the {obj.type} changes what the database does")  # fmt: skip


def _create_object(ctx: Context, difference: Difference) -> Fix:
    obj, shape = difference.object, difference.expected
    if obj.type == "function":
        return Fix(difference, f"create {obj}", (Step(shape["definition"]),))
    if obj.type == "extension":
        return Fix(difference, f"create {obj}", (Step(f"CREATE EXTENSION {ctx.quote(obj.name)}"),))
    if obj.type == "sequence":
        sql = (
            f"CREATE SEQUENCE {ctx.quote(obj.name)} AS {shape['type']} "
            f"INCREMENT {shape['increment']} "
            f"MINVALUE {shape['min']} MAXVALUE {shape['max']} START {shape['start']} "
            f"CACHE {shape['cache']}{' CYCLE' if shape['cycle'] else ''}"
        )
        return Fix(difference, f"create {obj}", (Step(sql),))
    checks = " ".join(f"CONSTRAINT {c}" for c in shape.get("constraints", ()))
    sql = f"CREATE DOMAIN {ctx.quote(obj.name)} AS {shape['type']}"
    if shape.get("default") is not None:
        sql += f" DEFAULT {shape['default']}"
    if not shape.get("nullable", True):
        sql += " NOT NULL"
    return Fix(difference, f"create {obj}", (Step(f"{sql} {checks}".rstrip()),))


# -- the plan -----------------------------------------------------------------------------


def choose_target(
    report: StateReport, revision: str | None, schemas: Mapping[str, Snapshot], live: Snapshot
) -> tuple[str | None, str]:
    """Return the revision to repair to, and why that one."""
    if report.state == DRIFTED:
        return report.current, "the revision the database records"
    if report.state == UNVERSIONED and report.matches is None:
        if revision is not None:
            return revision, "the revision asked for"
        count = len(compare(live, schemas[report.nearest])) if report.nearest else 0
        return report.nearest, (
            f"the nearest revision: {count} difference{'s' if count != 1 else ''} away, the "
            "fewest of all revisions (no version is recorded)"
        )
    return None, f"the database is {report.state}: there is nothing to repair"


def plan_repair(
    connection: sa.Connection,
    report: StateReport,
    live: Snapshot,
    schemas: Mapping[str, Snapshot],
    *,
    revision: str | None = None,
    allow_behaviour_changes: bool = False,
) -> RepairPlan:
    """Return the plan that takes the live schema to its target revision (read-only)."""
    target, why = choose_target(report, revision, schemas, live)
    if target is None:
        return RepairPlan(report, None, why, allow_behaviour_changes=allow_behaviour_changes)
    expected = schemas[target]
    ctx = Context(connection, live, expected, connection.dialect.name == "postgresql")
    fixes: list[Fix] = []
    covered: set[tuple[str, str]] = set()
    for difference in compare(live, expected):
        key = (difference.object.type, difference.object.name)
        # One rebuild answers every changed property of one index or constraint.
        if difference.kind == CHANGED and difference.object.type != "column" and key in covered:
            fixes.append(Fix(difference, f"covered by the fix of {difference.object} above"))
            continue
        covered.add(key)
        fixes.append(fix_for(ctx, difference))
    connection.rollback()
    return RepairPlan(report, target, why, tuple(fixes), allow_behaviour_changes)


def refusal(plan: RepairPlan) -> str:
    """Say, in one line, why ``plan`` is not carried out."""
    people = [fix for fix in plan.blocked if fix.verdict == PERSON]
    behaviour = [fix for fix in plan.blocked if fix.verdict == BEHAVIOUR]
    parts = []
    if people:
        parts.append(f"{len(people)} difference{'s' if len(people) != 1 else ''} need a person")
    if behaviour:
        parts.append(
            f"{len(behaviour)} fix{'es' if len(behaviour) != 1 else ''} change what the database "
            "does (--allow-behaviour-changes)"
        )
    return (
        f"refused: the repair to {plan.target} is not safe as a whole: {' and '.join(parts)}; "
        "nothing was changed"
    )


def expected_before_validation(expected: Snapshot, plan: RepairPlan) -> Snapshot:
    """Return ``expected`` as it reads before the plan's validations ran.

    The constraints they validate are NOT VALID then, and the columns they
    make NOT NULL are still nullable.
    """
    pending: dict[str, set[str]] = {}
    for fix in plan.fixes:
        obj = fix.difference.object
        validates = any(
            step.phase == VALIDATE and "VALIDATE CONSTRAINT" in step.sql for step in fix.steps
        )
        if validates and obj.type != "column":
            pending.setdefault(obj.table or "", set()).add(obj.name)
    nullable: dict[str, set[str]] = {}
    for fix in plan.fixes:
        if any(step.sql.endswith("SET NOT NULL") for step in fix.steps):
            table, _, column = fix.difference.object.name.partition(".")
            nullable.setdefault(table, set()).add(column)
    if not pending and not nullable:
        return expected
    tables = {}
    for name, shape in expected.tables.items():
        if name not in pending and name not in nullable:
            tables[name] = shape
            continue
        shape = dict(shape)
        constraints = dict(shape.get("constraints", {}))
        for constraint in pending.get(name, ()):
            if constraint in constraints:
                definition = _definition(constraints[constraint]) + " NOT VALID"
                constraints[constraint] = {
                    **constraints[constraint],
                    "validated": False,
                    "definition": definition,
                }
        columns = dict(shape.get("columns", {}))
        for column in nullable.get(name, ()):
            columns[column] = {**columns[column], "nullable": True}
        shape["constraints"], shape["columns"] = constraints, columns
        tables[name] = shape
    kinds = {kind: objects for kind, objects in expected.kinds().items()}
    kinds["tables"] = tables
    return Snapshot(**kinds)


def check_transaction(now: Snapshot, expected: Snapshot, plan: RepairPlan) -> list[Difference]:
    """Return how the schema inside the repair's transaction differs from what it must be.

    Before the validations run, the constraints they validate are NOT VALID,
    and the columns they make NOT NULL are not yet, with the check that
    lets them skip their scan.
    """
    interim = expected_before_validation(expected, plan)
    temporary = {name for fix in plan.fixes for name in fix.temporary}
    return [
        difference
        for difference in compare(now, interim)
        if not (difference.kind == UNEXPECTED and difference.object.name in temporary)
    ]


__all__ = [
    "BEHAVIOUR",
    "PERSON",
    "SAFE",
    "Fix",
    "RepairFailed",
    "RepairPlan",
    "RepairRefused",
    "Step",
    "check_transaction",
    "choose_target",
    "plan_repair",
    "refusal",
]
