"""Small charts drawn on the server as SVG: no script runs to draw them, they update with
the fragment they sit in, and every label is escaped like the rest of the page.

Each function returns markup (``markupsafe.Markup``) ready for a template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

__all__ = ["bars", "columns"]

WIDTH = 480
ROW = 22


def bars(items: Sequence[tuple[str, int]], *, label: str) -> Markup:
    """Horizontal bars, one per ``(name, value)``; the CSS class of a bar is
    ``bar-<name>`` (statuses get their colours)."""
    if not items:
        return Markup('<p class="muted">nothing yet</p>')
    top = max(value for _, value in items) or 1
    height = ROW * len(items) + 4
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img"'
        f' aria-label="{escape(label)}">'
    ]
    for row, (name, value) in enumerate(items):
        y = row * ROW + 2
        width = max(int((WIDTH - 200) * value / top), 1 if value else 0)
        parts.append(
            f'<text x="0" y="{y + 15}" class="chart-label">{escape(name)}</text>'
            f'<rect x="120" y="{y + 3}" width="{width}" height="{ROW - 8}"'
            f' class="bar bar-{escape(name)}"></rect>'
            f'<text x="{126 + width}" y="{y + 15}" class="chart-value">{value}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def columns(
    series: Sequence[Mapping[str, float]],
    *,
    keys: Sequence[str],
    label: str,
    seconds: float,
    top: float | None = None,
    unit: str = "",
) -> Markup:
    """Stacked columns over time (oldest left), one colour per key (CSS ``bar-<key>``),
    with the span's start and end under them; ``top``: the scale's maximum (default:
    the highest column)."""
    height, base = 120, 100
    count = len(series) or 1
    step = WIDTH / count
    if top is None:
        top = max((sum(point.get(key, 0) for key in keys) for point in series), default=0)
    top = top or 1
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img"'
        f' aria-label="{escape(label)}">',
        f'<line x1="0" y1="{base}" x2="{WIDTH}" y2="{base}" class="axis"></line>',
    ]
    for index, point in enumerate(series):
        y = float(base)
        for key in keys:
            value = point.get(key, 0)
            if not value:
                continue
            bar = (base - 8) * value / top
            y -= bar
            parts.append(
                f'<rect x="{index * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}"'
                f' height="{bar:.1f}" class="bar bar-{escape(key)}">'
                f"<title>{escape(key)}: {value:g}{unit}</title></rect>"
            )
    minutes = seconds / 60
    parts.append(
        f'<text x="0" y="{height - 4}" class="chart-label">-{minutes:g} min</text>'
        f'<text x="{WIDTH}" y="{height - 4}" class="chart-label" text-anchor="end">now</text>'
        f'<text x="0" y="12" class="chart-value">max {top:.3g}{unit}</text>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))
