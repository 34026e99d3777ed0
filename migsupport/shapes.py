"""The shapes of schema objects: what a database holds, read from its own catalog.

A shape is plain, JSON-ready data, the same vocabulary for every source:

- the live schema (:func:`read_schema`), read from PostgreSQL's catalog with
  its own renderers (``format_type``, ``pg_get_expr``, ``pg_get_indexdef``,
  ``pg_get_constraintdef``, ``pg_get_triggerdef``, ``pg_get_ruledef``), one
  query per kind of object for the whole schema, or from SQLite's
  ``sqlite_master`` and pragmas;
- the schema a revision produces (the ledger holds what :func:`read_schema`
  read on a scratch database after the revision);
- the object a migration helper is about to create (:func:`probe_table`,
  :func:`probe_index`): it is created for a moment on a temporary table,
  read back with the same reader, and rolled back, so the database itself
  says what it would hold.

A schema maps each kind (``tables``, ``enums``, ``domains``, ``sequences``,
``functions``, ``extensions``) to its objects by name. A table holds its
properties, ``columns``, ``constraints`` (by name), ``indexes``,
``triggers``, ``rules`` and ``policies``. What is not part of "equal" is
never read: comments, grants, statistics targets, storage parameters,
compression, ``CLUSTER`` marks, column order, views, other schemas.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa

KINDS = ("enums", "domains", "sequences", "functions", "extensions", "tables")

# -- normalized spellings --------------------------------------------------------------

_NOW_WORDS = {"now()", "current_timestamp", "transaction_timestamp()", "current_timestamp()"}
_NEXTVAL = re.compile(r"nextval\('[^']*'(::regclass)?\)", re.IGNORECASE)
_LITERAL_CAST = re.compile(r"('(?:[^']|'')*')(::[a-z_][a-z0-9_ .\"]*(\([0-9, ]+\))?(\[\])?)+", re.I)
_NULL_CAST = re.compile(r"null(::[a-z_][a-z0-9_ .\"]*(\([0-9, ]+\))?(\[\])?)*", re.I)
# The default of a serial column: PostgreSQL names its sequence, so any will do.
SEQUENCE_DEFAULT = "nextval(<sequence>)"


def normalize_default(text: str | None) -> str | None:
    """Return a column default in one spelling, without changing what it means.

    ``now()`` and ``CURRENT_TIMESTAMP`` are one default; ``DEFAULT NULL`` is
    no default; a lone literal loses the cast to the column's own type that
    PostgreSQL adds (``'x'::character varying``). Casts inside a larger
    expression stay: ``now() + '01:00:00'::interval`` keeps its meaning.
    """
    if text is None:
        return None
    value = _strip_parens(text.strip())
    if not value or _NULL_CAST.fullmatch(value):
        return None
    if _NEXTVAL.fullmatch(value):
        return SEQUENCE_DEFAULT
    literal = _LITERAL_CAST.fullmatch(value)
    if literal:
        return literal.group(1)
    if value.lower() in _NOW_WORDS:
        return "now()"
    return value


def _strip_parens(value: str) -> str:
    while value.startswith("(") and value.endswith(")") and _balanced(value[1:-1]):
        value = value[1:-1].strip()
    return value


def _balanced(text: str) -> bool:
    depth = 0
    for kind, token in _tokens(text):
        if kind == "op":
            depth += {"(": 1, ")": -1}.get(token, 0)
            if depth < 0:
                return False
    return depth == 0


@functools.lru_cache(maxsize=1024)
def builtin_type(text: str) -> str:
    """Return a built-in type as ``format_type`` spells it, in SQL's short upper-case form.

    ``character varying(100)`` is ``VARCHAR(100)``, ``timestamp with time
    zone`` is ``TIMESTAMP WITH TIME ZONE``, ``timestamp without time zone``
    is ``TIMESTAMP``.
    """
    value = text.upper()
    value = value.replace("CHARACTER VARYING", "VARCHAR").replace("BIT VARYING", "VARBIT")
    value = re.sub(r"\bCHARACTER\b", "CHAR", value)
    return value.replace(" WITHOUT TIME ZONE", "")


# -- a small SQL scanner -----------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<string>[EeXx]?'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*"|`(?:[^`]|``)*`|\[[^\]]*\])
  | (?P<dollar>\$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+)
  | (?P<op>\|\||<=|>=|<>|!=|==|<<|>>|::|.)
    """,
    re.S | re.X,
)


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    """Yield (kind, text) for each token of ``text``, blanks and comments left out."""
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "op"
        if kind == "tag":
            kind = "dollar"
        if kind in ("ws", "comment"):
            continue
        yield kind, match.group(0)


def _canonical_token(kind: str, token: str) -> str:
    if kind == "qident":
        inner = token[1:-1]
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", inner):
            return inner.lower()
        return token
    if kind == "word":
        return token.lower()
    return token


def normalize_sql(text: str) -> str:
    """Return a SQL fragment in one spelling: case, quoting and blanks do not count.

    For definitions kept as SQLite stores them, the text as it was typed.
    """
    out: list[str] = []
    previous = ""
    for kind, token in _tokens(text):
        token = _canonical_token(kind, token)
        call = token == "(" and (previous[-1:].isalnum() or previous[-1:] in ('"', "_"))
        if out and not (token in (",", ")", ".") or previous in ("(", ".") or call):
            out.append(" ")
        out.append(token)
        previous = token
    return "".join(out)


def _split_items(tokens: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """Split a token list at its top-level commas."""
    items: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for kind, token in tokens:
        if kind == "op" and token == "(":
            depth += 1
        elif kind == "op" and token == ")":
            depth -= 1
        if depth == 0 and kind == "op" and token == ",":
            items.append([])
            continue
        items[-1].append((kind, token))
    return [item for item in items if item]


def _group(tokens: list[tuple[str, str]], start: int) -> tuple[list[tuple[str, str]], int]:
    """Return the tokens inside the parenthesis at ``start``, and the index after it."""
    depth = 0
    for index in range(start, len(tokens)):
        kind, token = tokens[index]
        if kind == "op" and token == "(":
            depth += 1
        elif kind == "op" and token == ")":
            depth -= 1
            if depth == 0:
                return tokens[start + 1 : index], index + 1
    return tokens[start + 1 :], len(tokens)


def _text(tokens: Iterable[tuple[str, str]]) -> str:
    """Return tokens joined back into normalized SQL."""
    return normalize_sql(" ".join(token for _, token in tokens))


def _unqualify(text: str | None, schema: str | None) -> str | None:
    """Drop the qualification ``schema.`` from ``text``, outside string literals.

    Objects in the schema being read are named unqualified, so that the same
    definition reads the same in whichever schema it lives.
    """
    if text is None or not schema:
        return text
    prefixes = {f"{schema}.", f'"{schema}".'}
    if not any(prefix in text for prefix in prefixes):
        return text
    pieces: list[str] = []
    last = 0
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        if kind in ("word", "qident"):
            end = match.end()
            if end < len(text) and text[end] == "." and text[match.start() : end + 1] in prefixes:
                pieces.append(text[last : match.start()])
                last = end + 1
    pieces.append(text[last:])
    return "".join(pieces)


# -- PostgreSQL --------------------------------------------------------------------------

_FK_ACTIONS = {
    "a": "no action",
    "r": "restrict",
    "c": "cascade",
    "n": "set null",
    "d": "set default",
}
_FK_MATCH = {"s": "simple", "f": "full", "p": "partial"}
_CONSTRAINT_TYPES = {
    "p": "primary key",
    "u": "unique",
    "c": "check",
    "f": "foreign key",
    "x": "exclusion",
}
_ENABLED = {"O": "enabled", "D": "disabled", "R": "enabled on replica only", "A": "always enabled"}
_POLICY_COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_PERSISTENCE = {"p": "permanent", "u": "unlogged", "t": "temporary"}
_RELKINDS = {"r": "table", "p": "partitioned table"}

# Objects an extension installed are the extension's, never the schema's own.
_NOT_EXTENSION_MEMBER = (
    "NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.objid = {oid} AND dep.deptype = 'e')"
)

_PG_TABLES = """
SELECT c.oid, c.relname, c.relkind, c.relpersistence, c.relrowsecurity, c.relforcerowsecurity,
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
FROM pg_class c
WHERE c.relnamespace = :nsp AND c.relkind IN ('r', 'p') {names}
"""

_PG_COLUMNS = """
SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod), tn.nspname,
       quote_ident(tn.nspname), a.attnotnull, a.attidentity, a.attgenerated,
       CASE WHEN a.atthasdef THEN pg_get_expr(d.adbin, d.adrelid) END,
       CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN
         CASE WHEN cn.nspname = 'pg_catalog' THEN quote_ident(co.collname)
              ELSE quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END
       END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
WHERE c.relnamespace = :nsp AND c.relkind IN ('r', 'p') AND a.attnum > 0
  AND NOT a.attisdropped {names}
ORDER BY a.attrelid, a.attnum
"""

_PG_CONSTRAINTS = """
SELECT con.conrelid, con.conname, con.contype, pg_get_constraintdef(con.oid),
       con.condeferrable, con.condeferred, con.convalidated, con.conkey,
       fc.relname, fn.nspname, quote_ident(fn.nspname) || '.' || quote_ident(fc.relname),
       con.confrelid, con.confkey,
       -- The referred columns of a table that is not read here.
       CASE WHEN fc.relnamespace <> :nsp {elsewhere} THEN
         ARRAY(SELECT att.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, pos)
               JOIN pg_attribute att ON att.attrelid = con.confrelid AND att.attnum = k.num
               ORDER BY k.pos)
       END,
       con.confupdtype, con.confdeltype, con.confmatchtype
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
LEFT JOIN pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
WHERE c.relnamespace = :nsp AND c.relkind IN ('r', 'p') AND con.contype IN ('p', 'u', 'c', 'f', 'x')
  {names}
"""

_PG_INDEXES = """
SELECT i.indrelid, ic.relname, i.indisunique, i.indisvalid, am.amname,
       pg_get_indexdef(i.indexrelid), pg_get_expr(i.indpred, i.indrelid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_am am ON am.oid = ic.relam
WHERE c.relnamespace = :nsp AND c.relkind IN ('r', 'p') {names}
  AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid
                  AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
"""

_PG_TRIGGERS = """
SELECT t.tgrelid, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = :nsp AND c.relkind IN ('r', 'p') AND NOT t.tgisinternal {names}
"""

_PG_RULES = """
SELECT r.ev_class, r.rulename, pg_get_ruledef(r.oid), r.ev_enabled
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
WHERE c.relnamespace = :nsp AND c.relkind IN ('r', 'p') AND r.rulename <> '_RETURN' {names}
"""

_PG_POLICIES = """
SELECT p.polrelid, p.polname, p.polpermissive, p.polcmd,
       ARRAY(SELECT CASE WHEN r.oid = 0 THEN 'public' ELSE pg_get_userbyid(r.oid)::text END
             FROM unnest(p.polroles) AS r(oid) ORDER BY 1),
       pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = :nsp AND c.relkind IN ('r', 'p') {names}
"""

_PG_TYPES = f"""
SELECT t.typname, t.typtype,
       ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid
             ORDER BY e.enumsortorder),
       format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
       ARRAY(SELECT con.conname || ' ' || pg_get_constraintdef(con.oid) FROM pg_constraint con
             WHERE con.contypid = t.oid ORDER BY con.conname)
FROM pg_type t
WHERE t.typnamespace = :nsp AND t.typtype IN ('e', 'd')
  AND {_NOT_EXTENSION_MEMBER.format(oid="t.oid")}
"""

_PG_SEQUENCES = f"""
SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle
FROM pg_class c JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relnamespace = :nsp AND c.relkind = 'S'
  AND {_NOT_EXTENSION_MEMBER.format(oid="c.oid")}
  AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = 'pg_class'::regclass
                  AND dep.objid = c.oid AND dep.refclassid = 'pg_class'::regclass
                  AND dep.deptype IN ('a', 'i'))
"""

_PG_FUNCTIONS = f"""
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_functiondef(p.oid)
FROM pg_proc p
WHERE p.pronamespace = :nsp AND p.prokind IN ('f', 'p')
  AND {_NOT_EXTENSION_MEMBER.format(oid="p.oid")}
"""

_PG_EXTENSIONS = "SELECT e.extname FROM pg_extension e WHERE e.extnamespace = :nsp"


def _pg_type(text: str, namespace: str, quoted: str, current: str | None) -> str:
    """Return a column's type as ``format_type`` spells it, qualified only outside ``current``.

    ``format_type`` qualifies by the search_path; here a type is qualified
    exactly when its schema is not the one being read, so a same-named type
    in another schema is another type.
    """
    if namespace == "pg_catalog":
        return builtin_type(text)
    prefix = f"{quoted}."
    bare = text[len(prefix) :] if text.startswith(prefix) else text
    return bare if namespace == current else prefix + bare


def _pg_namespace(connection: sa.Connection, schema: str) -> int | None:
    return connection.execute(
        sa.text("SELECT oid FROM pg_namespace WHERE nspname = :name"), {"name": schema}
    ).scalar()


def _pg_schema(
    connection: sa.Connection, schema: str, current: str | None, names: list[str] | None
) -> dict[str, Any]:
    nsp = _pg_namespace(connection, schema)
    result: dict[str, Any] = {kind: {} for kind in KINDS}
    if nsp is None:
        return result
    params: dict[str, Any] = {"nsp": nsp}
    where = ""
    if names is not None:
        params["names"] = names
        where = "AND c.relname = ANY(:names)"

    elsewhere = "OR NOT fc.relname = ANY(:names)" if names is not None else ""

    def rows(sql: str) -> list[Any]:
        text = sql.format(names=where, elsewhere=elsewhere)
        return connection.execute(sa.text(text), params).all()

    tables: dict[int, dict[str, Any]] = {}
    table_names: dict[int, str] = {}
    for oid, name, relkind, persistence, rls, force_rls, partkey in rows(_PG_TABLES):
        shape: dict[str, Any] = {
            "kind": _RELKINDS[relkind],
            "persistence": _PERSISTENCE.get(persistence, persistence),
            "row_security": bool(rls),
            "force_row_security": bool(force_rls),
            "columns": {},
            "constraints": {},
            "indexes": {},
            "triggers": {},
            "rules": {},
            "policies": {},
        }
        if partkey:
            shape["partition_key"] = partkey
        tables[oid] = shape
        table_names[oid] = name
    attnames: dict[tuple[int, int], str] = {}
    for row in rows(_PG_COLUMNS):
        oid, attnum, name, type_text, type_nsp, type_quoted, notnull, identity, generated = row[:9]
        expr, coll = row[9:]
        attnames[(oid, attnum)] = name
        column: dict[str, Any] = {
            "type": _pg_type(type_text, type_nsp, type_quoted, current),
            "nullable": not notnull,
            "default": None if generated else normalize_default(_unqualify(expr, current)),
        }
        if coll:
            column["collation"] = coll
        if identity:
            column["identity"] = "always" if identity == "a" else "by default"
        if generated:
            column["generated"] = f"{_unqualify(expr, current)} STORED"
        tables[oid]["columns"][name] = column
    for row in rows(_PG_CONSTRAINTS):
        oid, name, contype, definition, deferrable, deferred, validated, keys = row[:8]
        ref_table, ref_nsp, ref_qualified, ref_oid, ref_keys, elsewhere = row[8:14]
        on_update, on_delete, match = row[14:]
        constraint: dict[str, Any] = {
            "type": _CONSTRAINT_TYPES[contype],
            "columns": [attnames[(oid, key)] for key in keys or ()],
            "definition": _unqualify(definition, current),
            "deferrable": bool(deferrable),
            "initially_deferred": bool(deferred),
            "validated": bool(validated),
        }
        if contype == "f":
            referred = (
                list(elsewhere)
                if elsewhere is not None
                else [attnames[(ref_oid, key)] for key in ref_keys]
            )
            constraint.update(
                references=ref_table if ref_nsp == current else ref_qualified,
                referred_columns=referred,
                on_delete=_FK_ACTIONS[on_delete],
                on_update=_FK_ACTIONS[on_update],
                match=_FK_MATCH[match],
            )
        tables[oid]["constraints"][name] = constraint
    for oid, name, unique, valid, method, definition, predicate in rows(_PG_INDEXES):
        tables[oid]["indexes"][name] = _pg_index(unique, valid, method, definition, predicate)
    for oid, name, definition, enabled in rows(_PG_TRIGGERS):
        tables[oid]["triggers"][name] = {
            "definition": _unqualify(definition, current),
            "enabled": _ENABLED[enabled],
        }
    for oid, name, definition, enabled in rows(_PG_RULES):
        tables[oid]["rules"][name] = {
            "definition": _unqualify(" ".join(definition.split()), current),
            "enabled": _ENABLED[enabled],
        }
    for oid, name, permissive, command, roles, using, check in rows(_PG_POLICIES):
        tables[oid]["policies"][name] = {
            "permissive": bool(permissive),
            "command": _POLICY_COMMANDS[command],
            "roles": list(roles),
            "using": _unqualify(using, current),
            "with_check": _unqualify(check, current),
        }
    result["tables"] = {table_names[oid]: shape for oid, shape in tables.items()}
    if names is not None:
        return result
    for name, typtype, labels, base, notnull, default, constraints in rows(_PG_TYPES):
        if typtype == "e":
            result["enums"][name] = list(labels)
        else:
            result["domains"][name] = {
                "type": base,
                "nullable": not notnull,
                "default": normalize_default(default),
                "constraints": list(constraints),
            }
    for name, type_text, start, increment, low, high, cache, cycle in rows(_PG_SEQUENCES):
        result["sequences"][name] = {
            "type": builtin_type(type_text),
            "start": start,
            "increment": increment,
            "min": low,
            "max": high,
            "cache": cache,
            "cycle": bool(cycle),
        }
    for signature, definition in rows(_PG_FUNCTIONS):
        result["functions"][signature] = {"definition": _unqualify(definition, current)}
    for (name,) in rows(_PG_EXTENSIONS):
        result["extensions"][name] = {}
    return result


def _pg_index(
    unique: bool, valid: bool, method: str, definition: str, predicate: str | None
) -> dict[str, Any]:
    """Return an index's shape, its keys as ``pg_get_indexdef`` spells each one.

    A key's spelling carries its collation, operator class, order and nulls
    order (``material_name varchar_pattern_ops``, ``created_at DESC``).
    Storage parameters (``WITH (...)``) are not part of the shape.
    """
    head = re.search(r" USING \S+ \(", definition)
    assert head is not None, definition
    keys, rest = _parenthesized(definition, head.end() - 1)
    shape: dict[str, Any] = {
        "unique": bool(unique),
        "method": method,
        "keys": keys,
        "valid": bool(valid),
    }
    rest = rest.lstrip()
    if rest.startswith("INCLUDE ("):
        shape["include"], rest = _parenthesized(rest, len("INCLUDE "))
    if rest.lstrip().startswith("NULLS NOT DISTINCT"):
        shape["nulls_not_distinct"] = True
    if predicate is not None:
        shape["predicate"] = predicate
    return shape


def _parenthesized(text: str, opening: int) -> tuple[list[str], str]:
    """Split the list in the parenthesis at ``opening`` at its top-level commas.

    Return the items, as written, and the text after the closing parenthesis.
    """
    items: list[str] = []
    depth = 0
    start = opening + 1
    for match in _TOKEN.finditer(text, opening):
        token = match.group(0)
        if match.lastgroup != "op":
            continue
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            if depth == 0:
                items.append(text[start : match.start()].strip())
                return [item for item in items if item], text[match.end() :]
        elif token == "," and depth == 1:
            items.append(text[start : match.start()].strip())
            start = match.end()
    raise ValueError(f"unbalanced parentheses in {text!r}")


# -- SQLite ------------------------------------------------------------------------------

_COLUMN_CONSTRAINT_WORDS = {
    "CONSTRAINT",
    "PRIMARY",
    "NOT",
    "NULL",
    "UNIQUE",
    "CHECK",
    "DEFAULT",
    "COLLATE",
    "REFERENCES",
    "GENERATED",
    "AS",
}


def _sqlite_name(token: tuple[str, str]) -> str:
    kind, text = token
    return text[1:-1] if kind == "qident" else text


def _sqlite_parse_table(sql: str) -> dict[str, Any]:
    """Read from a table's CREATE statement what SQLite's pragmas do not tell.

    Constraint names, checks, column collations and generated expressions.
    """
    tokens = list(_tokens(sql))
    start = next(i for i, (kind, token) in enumerate(tokens) if token == "(")
    body, _ = _group(tokens, start)
    parsed: dict[str, Any] = {"columns": {}, "constraints": []}
    for item in _split_items(body):
        first = item[0][1].upper() if item[0][0] == "word" else ""
        if first in ("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"):
            parsed["constraints"].append(_sqlite_constraint(item, None))
            continue
        column = _sqlite_name(item[0])
        info: dict[str, Any] = {}
        index = 1
        while index < len(item) and not (
            item[index][0] == "word" and item[index][1].upper() in _COLUMN_CONSTRAINT_WORDS
        ):
            index += 1
        rest = item[index:]
        position = 0
        while position < len(rest):
            kind, token = rest[position]
            word = token.upper() if kind == "word" else token
            if word == "COLLATE" and position + 1 < len(rest):
                info["collation"] = _sqlite_name(rest[position + 1]).upper()
                position += 2
                continue
            if word == "AS" and position + 1 < len(rest) and rest[position + 1][1] == "(":
                expression, after = _group(rest, position + 1)
                stored = after < len(rest) and rest[after][1].upper() == "STORED"
                kind_ = "STORED" if stored else "VIRTUAL"
                info["generated"] = f"{_strip_parens(_text(expression))} {kind_}"
                position = after
                continue
            if word in ("CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "REFERENCES"):
                constraint = _sqlite_constraint(rest[position:], column)
                if constraint is not None:
                    parsed["constraints"].append(constraint)
                # One column constraint at a time: skip to the next keyword.
                position += 1
                if word == "CONSTRAINT":
                    position += 2
                elif word == "CHECK":
                    _, position = _group(rest, position)
                continue
            position += 1
        parsed["columns"][column] = info
    return parsed


def _sqlite_constraint(item: list[tuple[str, str]], column: str | None) -> dict[str, Any] | None:
    """Parse one constraint clause; ``column`` is set for a column's own constraint."""
    name = None
    position = 0
    if item[0][1].upper() == "CONSTRAINT":
        name = _sqlite_name(item[1])
        position = 2
    if position >= len(item):
        return None
    word = item[position][1].upper()
    if word == "CHECK":
        expression, _ = _group(item, position + 1)
        definition = f"CHECK ({_strip_parens(_text(expression))})"
        return {"type": "check", "name": name, "definition": definition}
    if word == "PRIMARY":
        columns = [column] if column else _sqlite_columns(item, position)
        return {"type": "primary key", "name": name, "columns": columns}
    if word == "UNIQUE":
        columns = [column] if column else _sqlite_columns(item, position)
        return {"type": "unique", "name": name, "columns": columns}
    if word in ("FOREIGN", "REFERENCES"):
        columns = [column] if column else _sqlite_columns(item, position)
        words = [token.upper() for kind, token in item if kind == "word"]
        deferrable = "DEFERRABLE" in words and not (
            "NOT" in words and words[words.index("DEFERRABLE") - 1] == "NOT"
        )
        deferred = deferrable and "INITIALLY" in words and "DEFERRED" in words
        at = next(i for i, (_, token) in enumerate(item) if token.upper() == "REFERENCES")
        return {
            "type": "foreign key",
            "name": name,
            "columns": columns,
            "references": _sqlite_name(item[at + 1]),
            "deferrable": deferrable,
            "initially_deferred": deferred,
        }
    return None


def _sqlite_columns(item: list[tuple[str, str]], position: int) -> list[str]:
    opening = next(i for i in range(position, len(item)) if item[i][1] == "(")
    inside, _ = _group(item, opening)
    return [_sqlite_name(part[0]) for part in _split_items(inside)]


def _sqlite_index(sql: str, unique: bool) -> dict[str, Any]:
    tokens = list(_tokens(sql))
    on = next(
        i for i, (kind, token) in enumerate(tokens) if kind == "word" and token.upper() == "ON"
    )
    opening = next(i for i in range(on, len(tokens)) if tokens[i][1] == "(")
    keys, after = _group(tokens, opening)
    shape: dict[str, Any] = {
        "unique": unique,
        "keys": [_text(key) for key in _split_items(keys)],
        "valid": True,
    }
    rest = tokens[after:]
    if rest and rest[0][1].upper() == "WHERE":
        shape["predicate"] = _strip_parens(_text(rest[1:]))
    return shape


# Declared types SQLite treats alike, as SQLAlchemy's dialects spell them.
_SQLITE_SYNONYMS = {
    "FLOAT": "DOUBLE",
    "FLOAT(53)": "DOUBLE",
    "DOUBLE PRECISION": "DOUBLE",
    "FLOAT8": "DOUBLE",
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "INT8": "BIGINT",
    "BOOL": "BOOLEAN",
    "TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE",
}


def _sqlite_type(declared: str) -> str:
    text = " ".join(declared.upper().split())
    text = re.sub(r"\s*,\s*", ",", re.sub(r"\s*\(\s*", "(", text))
    text = text.replace("CHARACTER VARYING", "VARCHAR")
    return _SQLITE_SYNONYMS.get(text, text)


def _sqlite_schema(connection: sa.Connection, schema: str, names: list[str] | None) -> dict:
    result: dict[str, Any] = {kind: {} for kind in KINDS}
    master = f"{schema}.sqlite_master"

    def pragma(name: str, argument: str) -> list[Any]:
        quoted = argument.replace("'", "''")
        return list(connection.exec_driver_sql(f"PRAGMA {schema}.{name}('{quoted}')"))

    objects = list(
        connection.exec_driver_sql(
            f"SELECT type, name, tbl_name, sql FROM {master} "
            "WHERE type IN ('table', 'index', 'trigger') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    )
    tables = {
        name: sql
        for kind, name, _, sql in objects
        if kind == "table" and sql and (names is None or name in names)
    }
    for table, sql in tables.items():
        parsed = _sqlite_parse_table(sql)
        columns: dict[str, Any] = {}
        primary: list[tuple[int, str]] = []
        for _, name, declared, notnull, default, pk, hidden in pragma("table_xinfo", table):
            info = parsed["columns"].get(name, {})
            column: dict[str, Any] = {
                "type": _sqlite_type(declared or ""),
                "nullable": not notnull,
                "default": normalize_default(default),
            }
            if info.get("collation"):
                column["collation"] = info["collation"]
            if hidden in (2, 3) and info.get("generated"):
                column["generated"] = info["generated"]
            columns[name] = column
            if pk:
                primary.append((pk, name))
        constraints: dict[str, Any] = {}
        declared = parsed["constraints"]

        def named(kind: str, columns_: list[str], declared: list = declared) -> str | None:
            for constraint in declared:
                if constraint["type"] == kind and constraint.get("columns") == columns_:
                    return constraint.get("name")
            return None

        if primary:
            pk_columns = [name for _, name in sorted(primary)]
            key = named("primary key", pk_columns) or f"({', '.join(pk_columns)})"
            constraints[key] = {"type": "primary key", "columns": pk_columns}
        for index_row in pragma("index_list", table):
            _, index_name, _, origin, _ = index_row
            if origin != "u":
                continue
            unique_columns = [row[2] for row in pragma("index_info", index_name)]
            key = named("unique", unique_columns) or f"({', '.join(unique_columns)})"
            constraints[key] = {"type": "unique", "columns": unique_columns}
        foreign: dict[int, dict[str, Any]] = {}
        for fk_id, _, referred, source, target, on_update, on_delete, match in pragma(
            "foreign_key_list", table
        ):
            entry = foreign.setdefault(
                fk_id,
                {
                    "type": "foreign key",
                    "columns": [],
                    "references": referred,
                    "referred_columns": [],
                    "on_delete": on_delete.lower(),
                    "on_update": on_update.lower(),
                    "match": "simple" if match.upper() == "NONE" else match.lower(),
                },
            )
            entry["columns"].append(source)
            entry["referred_columns"].append(target)
        # PRAGMA foreign_key_list numbers the keys from the last declared one.
        candidates = [c for c in declared if c["type"] == "foreign key"]
        for _, entry in sorted(foreign.items(), reverse=True):
            found = next(
                (
                    c
                    for c in candidates
                    if c["columns"] == entry["columns"] and c["references"] == entry["references"]
                ),
                {},
            )
            if found:
                candidates.remove(found)
            entry["deferrable"] = bool(found.get("deferrable"))
            entry["initially_deferred"] = bool(found.get("initially_deferred"))
            entry["validated"] = True
            key = found.get("name") or (
                f"({', '.join(entry['columns'])}) references "
                f"{entry['references']} ({', '.join(entry['referred_columns'])})"
            )
            constraints[key] = entry
        for constraint in declared:
            if constraint["type"] == "check":
                key = constraint["name"] or constraint["definition"][len("CHECK ") :]
                constraints[key] = {"type": "check", "definition": constraint["definition"]}
        result["tables"][table] = {
            "kind": "table",
            "columns": columns,
            "constraints": constraints,
            "indexes": {},
            "triggers": {},
        }
    unique_flags: dict[str, bool] = {}
    for table in tables:
        for _, index_name, unique, _, _ in pragma("index_list", table):
            unique_flags[index_name] = bool(unique)
    for kind, name, table, sql in objects:
        if table not in tables or not sql:
            continue
        if kind == "index":
            result["tables"][table]["indexes"][name] = _sqlite_index(
                sql, unique_flags.get(name, False)
            )
        elif kind == "trigger":
            result["tables"][table]["triggers"][name] = {"definition": normalize_sql(sql)}
    return result


# -- entry points ------------------------------------------------------------------------


def current_schema(connection: sa.Connection) -> str | None:
    """Return the schema unqualified DDL lands in on this connection (None on SQLite)."""
    if connection.dialect.name == "postgresql":
        return connection.execute(sa.text("SELECT current_schema()")).scalar()
    return None


def read_schema(
    connection: sa.Connection, schema: str | None = None, *, tables: list[str] | None = None
) -> dict[str, Any]:
    """Return the shapes of every object in ``schema`` (default: the current one).

    With ``tables``, only those tables are read, and no other kind.
    """
    if connection.dialect.name == "postgresql":
        current = current_schema(connection)
        return _pg_schema(connection, schema or current or "public", current, tables)
    return _sqlite_schema(connection, schema or "main", tables)


def temporary_schema(connection: sa.Connection) -> str:
    """Return the name of this session's temporary schema, creating it if need be."""
    if connection.dialect.name != "postgresql":
        return "temp"
    name = connection.execute(
        sa.text("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()")
    ).scalar()
    if name is None:
        # A session has no temporary schema until its first temporary object.
        connection.exec_driver_sql("CREATE TEMPORARY TABLE migsupport_probe_anchor ()")
        connection.exec_driver_sql("DROP TABLE migsupport_probe_anchor")
        name = connection.execute(
            sa.text("SELECT nspname FROM pg_namespace WHERE oid = pg_my_temp_schema()")
        ).scalar()
    return name


def copy_table_structure(connection: sa.Connection, table: str, schema: str | None) -> None:
    """Create an empty temporary table with the columns of ``schema.table``.

    For :func:`probe`: an index is built on it, in the temporary schema, as it
    would be on the real table.
    """
    if connection.dialect.name == "postgresql":
        preparer = connection.dialect.identifier_preparer
        source = preparer.quote(table)
        if schema:
            source = f"{preparer.quote_schema(schema)}.{source}"
        connection.exec_driver_sql(
            f"CREATE TEMPORARY TABLE {preparer.quote(table)} (LIKE {source})"
        )
        return
    sql = connection.exec_driver_sql(
        "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar_one()
    # sqlite_master holds "CREATE TABLE ..." with its first two words normalized.
    connection.exec_driver_sql("CREATE TEMPORARY " + sql[len("CREATE ") :])


def probe(connection: sa.Connection, table: str, create: Any) -> dict[str, Any]:
    """Return the shape of ``table`` after ``create(temporary schema)``, then undo it.

    ``create`` builds the object a migration is about to create, but on a
    temporary table of the same name; it runs in a savepoint that is rolled
    back, so nothing of it remains and the real table is never touched.
    The database itself renders the shape, in the same words as the live
    objects it is compared with.
    """
    began = not connection.in_transaction()
    transaction = connection.begin() if began else connection.begin_nested()
    try:
        schema = temporary_schema(connection)
        create(schema)
        return read_schema(connection, schema, tables=[table])["tables"][table]
    finally:
        transaction.rollback()


def foreign_key_shape(constraint: sa.ForeignKeyConstraint, schema: str | None) -> dict[str, Any]:
    """Return the shape of a foreign key as SQLAlchemy describes it, in the catalog's words."""
    targets = [element.target_fullname.split(".") for element in constraint.elements]
    referred_schema = targets[0][-3] if len(targets[0]) > 2 else None
    table = targets[0][-2]
    return {
        "type": "foreign key",
        "columns": list(constraint.column_keys),
        "references": table if referred_schema in (None, schema) else f"{referred_schema}.{table}",
        "referred_columns": [target[-1] for target in targets],
        "on_delete": (constraint.ondelete or "no action").lower(),
        "on_update": (constraint.onupdate or "no action").lower(),
        "match": (constraint.match or "simple").lower(),
        "deferrable": bool(constraint.deferrable),
        "initially_deferred": (constraint.initially or "").upper() == "DEFERRED",
        "validated": True,
    }


def enum_labels(connection: sa.Connection, schema: str | None, name: str) -> list[str] | None:
    """Return the labels of the ENUM type ``schema.name`` in order, or None if there is none."""
    if connection.dialect.name != "postgresql":
        return None
    row = connection.execute(
        sa.text(
            "SELECT ARRAY(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid "
            "ORDER BY e.enumsortorder) FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE t.typname = :name AND n.nspname = :schema AND t.typtype = 'e'"
        ),
        {"name": name, "schema": schema or current_schema(connection)},
    ).first()
    return None if row is None else list(row[0])


def index_table(connection: sa.Connection, schema: str | None, name: str) -> str | None:
    """Return the table the index ``schema.name`` is on, or None if there is no such index."""
    if connection.dialect.name == "postgresql":
        return connection.execute(
            sa.text(
                "SELECT c.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid "
                "JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = ic.relnamespace "
                "WHERE ic.relname = :name AND n.nspname = :schema"
            ),
            {"name": name, "schema": schema or current_schema(connection)},
        ).scalar()
    return connection.exec_driver_sql(
        f"SELECT tbl_name FROM {schema or 'main'}.sqlite_master WHERE type = 'index' AND name = ?",
        (name,),
    ).scalar()


def table_shape(connection: sa.Connection, schema: str | None, name: str) -> dict[str, Any] | None:
    """Return the shape of the table ``schema.name``, or None if there is no such table."""
    return read_schema(connection, schema, tables=[name])["tables"].get(name)
