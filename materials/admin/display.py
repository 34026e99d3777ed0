"""How the detection admin shows a value: status badges, durations, short ids."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.utils.html import format_html
from django.utils.safestring import SafeString

from materials.models import JobStatus

# Background colours of the job status badges, all readable under white text.
STATUS_COLOURS: dict[str, str] = {
    JobStatus.PENDING: "#6b7280",
    JobStatus.PROCESSING: "#1d4ed8",
    JobStatus.COMPLETED: "#15803d",
    JobStatus.FAILED: "#b91c1c",
    JobStatus.CANCELLED: "#92400e",
}
UNKNOWN_STATUS_COLOUR = "#374151"
EMPTY = "—"

# Hex digits of a UUID shown in a list; the whole id is one hover away.
SHORT_ID_LENGTH = 8


def status_label(status: str) -> str:
    """The status's label (``Completed``), or the value itself when unknown."""
    try:
        return JobStatus(status).label
    except ValueError:
        return status


def status_badge(status: str) -> SafeString:
    """The job status as a coloured badge."""
    colour = STATUS_COLOURS.get(status, UNKNOWN_STATUS_COLOUR)
    return format_html(
        '<span class="job-status job-status-{}" style="background-color: {}; color: #fff; '
        'padding: 2px 8px; border-radius: 9px; white-space: nowrap;">{}</span>',
        str(status).lower(),
        colour,
        status_label(status),
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
