"""How the detection admin shows a value: status badges, durations, short ids."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from materials.models import JobStatus
from migsupport.wording import ERROR, SUCCESS, WARNING

# Background colours of the job status badges, all readable under white text.
STATUS_COLOURS: dict[str, str] = {
    JobStatus.PENDING: "#6b7280",
    JobStatus.PROCESSING: "#1d4ed8",
    JobStatus.COMPLETED: "#15803d",
    JobStatus.FAILED: "#b91c1c",
    JobStatus.CANCELLED: "#92400e",
}
UNKNOWN_STATUS_COLOUR = "#374151"
# The schema state's badge, by its severity (migsupport.wording), in the same colours.
SEVERITY_COLOURS: dict[str, str] = {
    SUCCESS: STATUS_COLOURS[JobStatus.COMPLETED],
    WARNING: STATUS_COLOURS[JobStatus.CANCELLED],
    ERROR: STATUS_COLOURS[JobStatus.FAILED],
}
EMPTY = "—"

# Hex digits of a UUID shown in a list; the whole id is one hover away.
SHORT_ID_LENGTH = 8


def status_label(status: str) -> str:
    """The status's label (``Completed``), or the value itself when unknown."""
    try:
        return JobStatus(status).label
    except ValueError:
        return status


def badge(css_class: str, colour: str, label: str) -> SafeString:
    """A coloured badge under white text: how the admin shows a status."""
    return format_html(
        '<span class="{}" style="background-color: {}; color: #fff; '
        'padding: 2px 8px; border-radius: 9px; white-space: nowrap;">{}</span>',
        css_class,
        colour,
        label,
    )


def status_badge(status: str) -> SafeString:
    """The job status as a coloured badge."""
    colour = STATUS_COLOURS.get(status, UNKNOWN_STATUS_COLOUR)
    return badge(f"job-status job-status-{str(status).lower()}", colour, status_label(status))


def state_badge(state: str | None, severity: str | None) -> SafeString:
    """A database's schema state (``up_to_date``, ``drifted``...) as a badge like a job's status.

    Coloured by ``severity`` (``migsupport.wording``): at the head, a state a
    guarded command can bring there, or one a person must look at. ``None``:
    the state could not be read.
    """
    colour = SEVERITY_COLOURS.get(severity or "", UNKNOWN_STATUS_COLOUR)
    name = state or "unreadable"
    return badge(f"schema-state schema-state-{name.replace('_', '-')}", colour, name)


def with_code(text: str | None) -> SafeString:
    """``text`` escaped, each `backticked` part (a command) shown as code."""
    parts = (text or "").split("`")
    return format_html_join(
        "",
        "{}",
        (
            (format_html("<code>{}</code>", part) if i % 2 else part,)
            for i, part in enumerate(parts)
        ),
    )


def short_id(value: uuid.UUID | str) -> SafeString:
    """The first hex digits of a UUID, the whole id in its tooltip."""
    full = str(value)
    return format_html(
        '<span class="short-id" title="{}" style="font-family: monospace; white-space: nowrap;">'
        "{}</span>",
        full,
        full.replace("-", "")[:SHORT_ID_LENGTH],
    )


def format_duration(duration: timedelta | None) -> str:
    """``12.3 s``, ``4 min 05 s``, ``2 h 03 min``; an em dash when unknown."""
    if duration is None:
        return EMPTY
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
