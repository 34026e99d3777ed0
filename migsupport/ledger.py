"""The revision ledger: what each revision's schema is, recorded once.

Knowing the schema at a revision means replaying the migrations on a scratch
database, which production credentials often cannot create. So it is done
where that is cheap (CI, ``alembic_verify``) and recorded in a committed file,
``ledger.json`` beside the revision scripts, the way Atlas keeps
``atlas.sum``. For each revision it holds the checksum of its script, its
``down_revision``, and per dialect its normalized schema, stored as a
delta on the schema below it (so the file grows with the changes, not with
the number of revisions times the size of the schema) plus a digest of the
whole schema, by which ``alembic_verify`` checks that a replay still gives
what the ledger says.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory

from migsupport.exceptions import MigsupportError
from migsupport.shapes import KINDS
from migsupport.snapshot import Snapshot

FILENAME = "ledger.json"
# Format 2: the complete shapes of migsupport.shapes (constraints by name, index methods,
# predicates and validity, triggers, rules, policies, domains, sequences, functions).
FORMAT = 2


class LedgerError(MigsupportError):
    """The ledger file cannot be read."""


def ledger_path(scripts: ScriptDirectory) -> Path:
    """Return where the ledger of ``scripts`` lives: beside the revision scripts."""
    return Path(scripts.dir) / FILENAME


def revision_order(scripts: ScriptDirectory) -> list[str]:
    """Return the revision ids from base to head."""
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


def script_checksum(scripts: ScriptDirectory, revision: str) -> str:
    """Return the SHA-256 of a revision's script file."""
    path = scripts.get_revision(revision).path
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _down(scripts: ScriptDirectory, revision: str) -> str | None:
    down = scripts.get_revision(revision).down_revision
    if isinstance(down, (tuple, list)):
        return ",".join(down)
    return down


def _delta_base(down: str | None) -> str | None:
    """Return the revision a delta is taken against: the first parent of a merge."""
    return down.split(",")[0] if down else None


def _delta(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """Return what changed from ``before`` to ``after``: per kind, new shapes, and None for gone."""
    delta: dict[str, Any] = {}
    old_kinds, new_kinds = before.kinds(), after.kinds()
    for kind in KINDS:
        old, new = old_kinds[kind], new_kinds[kind]
        changed = {k: v for k, v in new.items() if old.get(k) != v}
        changed.update({k: None for k in old.keys() - new.keys()})
        if changed:
            delta[kind] = changed
    return delta


def _apply(snapshot: Snapshot, delta: Mapping[str, Any]) -> Snapshot:
    kinds: dict[str, Any] = {}
    for kind, objects in snapshot.kinds().items():
        result = dict(objects)
        for key, value in delta.get(kind, {}).items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = value
        kinds[kind] = result
    return Snapshot(**kinds)


@dataclass(frozen=True)
class Ledger:
    """A parsed ledger: revision id to its recorded entry."""

    entries: Mapping[str, Mapping[str, Any]]
    # Why the file could not be used at all (another format): the ledger is stale.
    unusable: str | None = None

    @classmethod
    def load(cls, path: Path) -> Ledger:
        """Read the ledger at ``path``; a missing file is an empty ledger.

        A ledger written in another format is read as empty and stale, saying
        so: its schemas describe less than "equal" means now, and must never
        be taken for proof.
        """
        if not path.exists():
            return cls(entries={})
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LedgerError(f"cannot read the ledger {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise LedgerError(f"the ledger {path} is not a JSON object; regenerate it")
        if data.get("format") != FORMAT:
            return cls(
                entries={},
                unusable=(
                    f"the ledger is in format {data.get('format')!r}, and this migsupport "
                    f"reads format {FORMAT}"
                ),
            )
        return cls(entries=data.get("revisions", {}))

    def write(self, path: Path) -> None:
        """Write the ledger to ``path``, stably ordered for readable diffs."""
        data = {"format": FORMAT, "revisions": dict(self.entries)}
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    def stale_reasons(self, scripts: ScriptDirectory, dialect: str | None = None) -> list[str]:
        """Return why the ledger does not describe ``scripts``; empty when it is fresh.

        With ``dialect``, a revision whose schema was never recorded on that
        dialect makes the ledger stale too.
        """
        if self.unusable:
            return [self.unusable]
        reasons: list[str] = []
        order = revision_order(scripts)
        for revision in order:
            entry = self.entries.get(revision)
            if entry is None:
                reasons.append(f"revision {revision} is not in the ledger")
                continue
            if entry.get("checksum") != script_checksum(scripts, revision):
                reasons.append(f"revision {revision}'s script changed after the ledger was written")
            if entry.get("down_revision") != _down(scripts, revision):
                reasons.append(
                    f"revision {revision}'s down_revision is {_down(scripts, revision)}, "
                    f"the ledger says {entry.get('down_revision')}"
                )
            if dialect is not None and dialect not in entry.get("schema", {}):
                reasons.append(f"revision {revision} has no recorded {dialect} schema")
        for revision in sorted(self.entries.keys() - set(order)):
            reasons.append(f"revision {revision} is in the ledger but has no script")
        return reasons

    def schemas(self, scripts: ScriptDirectory, dialect: str) -> dict[str, Snapshot]:
        """Return every revision's recorded schema on ``dialect``, base to head."""
        result: dict[str, Snapshot] = {}
        for revision in revision_order(scripts):
            entry = self.entries[revision]
            base = _delta_base(entry.get("down_revision"))
            below = result[base] if base else Snapshot()
            result[revision] = _apply(below, entry["schema"][dialect]["delta"])
        return result

    def digests(self, dialect: str) -> dict[str, str]:
        """Return each revision's recorded schema digest on ``dialect``."""
        return {
            revision: entry["schema"][dialect]["digest"]
            for revision, entry in self.entries.items()
            if dialect in entry.get("schema", {})
        }

    def with_schemas(
        self, scripts: ScriptDirectory, recorded: Mapping[str, Mapping[str, Snapshot]]
    ) -> Ledger:
        """Return a ledger of ``scripts`` with the schemas just replayed.

        ``recorded`` maps a dialect to its schema per revision. A dialect not
        replayed now keeps its recorded schemas only for revisions whose
        script is unchanged, so a stale schema is never carried forward.
        """
        entries: dict[str, Any] = {}
        order = revision_order(scripts)
        for revision in order:
            checksum = script_checksum(scripts, revision)
            old = self.entries.get(revision, {})
            schema: dict[str, Any] = {}
            if old.get("checksum") == checksum:
                schema.update({d: v for d, v in old.get("schema", {}).items() if d not in recorded})
            down = _down(scripts, revision)
            base = _delta_base(down)
            for dialect, snapshots in recorded.items():
                below = snapshots[base] if base else Snapshot()
                after = snapshots[revision]
                schema[dialect] = {"digest": after.digest(), "delta": _delta(below, after)}
            entries[revision] = {"down_revision": down, "checksum": checksum, "schema": schema}
        return Ledger(entries=entries)
