"""Charts as inline SVG, drawn on the server: nothing is fetched by the browser.

Each function takes plain labels and numbers and returns an ``<svg>``
element; nothing here knows the models. Every bar carries its label and
value twice: in a ``<title>`` (the tooltip, and what a screen reader
announces) and in ``data-label``/``data-value`` attributes. Colours come
from the admin's CSS variables (see ``admin/materials/dashboard.html``),
so the charts follow its light and dark themes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

FONT_SIZE = 11


def nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (1 for 0)."""
    if value <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return int(step * magnitude)
    return int(10 * magnitude)  # pragma: no cover - the loop always returns


def number(value: float) -> str:
    """``12,345``."""
    return f"{round(value):,}"


def tick(value: float) -> str:
    """An axis value: ``2.5``, ``500,000``."""
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def _svg(width: int, height: int, label: str, body: Sequence[str], css_class: str) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart {}" viewBox="0 0 {} {}" '
        'width="100%" role="img" aria-label="{}" preserveAspectRatio="xMinYMin meet" '
        'font-size="{}"><title>{}</title>{}</svg>',
        css_class,
        width,
        height,
        label,
        FONT_SIZE,
        label,
        # Every part was built by format_html, which escaped what it took in.
        mark_safe("".join(body)),
    )


def _bar(
    x: float, y: float, width: float, height: float, label: str, value: float, fill: str = ""
) -> str:
    return format_html(
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}"{} data-label="{}" data-value="{}">'
        "<title>{}: {}</title></rect>",
        f"{x:.1f}",
        f"{y:.1f}",
        f"{max(width, 0):.1f}",
        f"{max(height, 0):.1f}",
        format_html(' style="fill: {}"', fill) if fill else "",
        label,
        round(value),
        label,
        number(value),
    )


def _text(x: float, y: float, text: str, css_class: str = "", anchor: str = "start") -> str:
    return format_html(
        '<text x="{}" y="{}" class="{}" text-anchor="{}">{}</text>',
        f"{x:.1f}",
        f"{y:.1f}",
        css_class,
        anchor,
        text,
    )


def column_chart(
    points: Sequence[tuple[str, str, float]],
    *,
    label: str,
    tick_every: int = 5,
    width: int = 760,
    height: int = 220,
) -> SafeString:
    """Vertical bars, one per point: ``(key, axis label, value)``, left to right.

    The axis names every ``tick_every``-th point and the last one; the
    ``key`` (a date, say) is each bar's ``data-label``.
    """
    left, right, top, bottom = 48, 8, 10, 22
    plot_width, plot_height = width - left - right, height - top - bottom
    ceiling = nice_ceiling(max((value for _, _, value in points), default=0))
    body = []
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_height * (1 - fraction)
        body.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>',
                left,
                width - right,
                f"{y:.1f}",
                f"{y:.1f}",
            )
        )
        body.append(_text(left - 6, y + 4, tick(ceiling * fraction), "axis", "end"))
    slot = plot_width / max(len(points), 1)
    for i, (key, axis_label, value) in enumerate(points):
        bar_height = plot_height * value / ceiling
        x = left + i * slot
        body.append(
            _bar(
                x + slot * 0.15, top + plot_height - bar_height, slot * 0.7, bar_height, key, value
            )
        )
        if i % tick_every == 0 or i == len(points) - 1:
            body.append(_text(x + slot / 2, height - 6, axis_label, "axis", "middle"))
    return _svg(width, height, label, body, "column-chart")


def bar_chart(
    rows: Sequence[tuple[str, float, str]],
    *,
    label: str,
    width: int = 760,
    row_height: int = 26,
) -> SafeString:
    """Horizontal bars, one per row: ``(label, value, colour)``, top to bottom."""
    label_width, value_width = 110, 90
    plot_width = width - label_width - value_width
    ceiling = max((value for _, value, _ in rows), default=0) or 1
    body = []
    for i, (row_label, value, colour) in enumerate(rows):
        y = i * row_height
        body.append(_text(label_width - 8, y + row_height * 0.65, row_label, "label", "end"))
        bar_width = plot_width * value / ceiling
        body.append(_bar(label_width, y + 4, bar_width, row_height - 8, row_label, value, colour))
        body.append(_text(label_width + bar_width + 6, y + row_height * 0.65, number(value)))
    return _svg(width, max(len(rows), 1) * row_height, label, body, "bar-chart")


def histogram_rows(
    rows: Sequence[tuple[str, Sequence[float]]],
    *,
    label: str,
    edges: Sequence[str],
    width: int = 760,
    row_height: int = 46,
) -> SafeString:
    """One small histogram per row: ``(label, counts per bin)``, top to bottom.

    Each row is scaled to its own largest bin, so the rows compare by shape;
    the row's total stands beside its label. ``edges`` names the bins'
    bounds (one more than the bins), written under the last row.
    """
    label_width, right = 150, 8
    bins = len(edges) - 1
    plot_width = width - label_width - right
    slot = plot_width / max(bins, 1)
    axis = 16
    body = []
    for i, (row_label, counts) in enumerate(rows):
        top = i * row_height + 4
        plot_height = row_height - 10
        body.append(_text(label_width - 8, top + plot_height * 0.45, row_label, "label", "end"))
        body.append(
            _text(
                label_width - 8, top + plot_height * 0.45 + 14, number(sum(counts)), "axis", "end"
            )
        )
        ceiling = max(counts, default=0) or 1
        for j, count in enumerate(counts):
            bar_height = plot_height * count / ceiling
            bin_label = f"{row_label}, {edges[j]} to {edges[j + 1]}"
            body.append(
                _bar(
                    label_width + j * slot + 1,
                    top + plot_height - bar_height,
                    slot - 2,
                    bar_height,
                    bin_label,
                    count,
                )
            )
        body.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>',
                label_width,
                width - right,
                top + plot_height,
                top + plot_height,
            )
        )
    height = max(len(rows), 1) * row_height + axis
    for j, edge in enumerate(edges):
        anchor = "start" if j == 0 else "end" if j == bins else "middle"
        body.append(_text(label_width + j * slot, height - 4, edge, "axis", anchor))
    return _svg(width, height, label, body, "histogram-rows")
