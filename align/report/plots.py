"""Small SVG charts for the project report: histograms, bar, line and interval charts.

The report must be one self-contained file that opens anywhere, so charts are drawn here as
plain SVG text (no plotting library, no fonts or scripts to fetch) and embedded as
``<img src="data:image/svg+xml;base64,...">``: an image, unlike inline SVG, can never run
script, and the browser reports its natural size, so a broken chart is detectable. Every
label is XML-escaped, because category names come from stored data (model names, template
ids). The same inputs always give the same bytes.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

WIDTH = 680
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948",
           "#9c755f", "#ff9da7", "#bab0ac")
FONT = 'font-family="Helvetica,Arial,sans-serif"'
TOP, BOTTOM, RIGHT = 34, 46, 16
LEGEND_ROW = 16
MAX_LABEL = 38


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt(value: float) -> str:
    """A number in at most four significant digits (1234 -> 1234, 0.123456 -> 0.1235)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5:
        return f"{value:.3g}"
    return f"{value:.4g}"


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart; at least
    1 apart with ``integer``, for counts)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if integer:
        step = max(step, 1)
    first = math.floor(lo / step) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 12))
    return ticks


class _Canvas:
    """An SVG document being built: a title and a plot area with linear axes."""

    def __init__(self, height: int, title: str, left: int = 56, width: int = WIDTH,
                 right: int = RIGHT, legend: Sequence[str] = ()) -> None:
        self.width, self.left, self.title = width, left, title
        self.parts: list[str] = []
        self.x0, self.x1 = left, width - right
        rows = self._legend(legend) if legend else 0
        self.height = height + LEGEND_ROW * rows
        self.y0, self.y1 = self.height - BOTTOM, TOP + LEGEND_ROW * rows

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(self, x: float, y: float, label: object, anchor: str = "middle",
             extra: str = "") -> None:
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>'
                 f"{_esc(label)}</text>")

    def line(self, x1: float, y1: float, x2: float, y2: float, stroke: str = "#333333",
             extra: str = "") -> None:
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                 f'stroke="{stroke}"{extra}/>')

    def rect(self, x: float, y: float, w: float, h: float, fill: str, title: str = "") -> None:
        tip = f"<title>{_esc(title)}</title>" if title else ""
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0):.1f}" '
                 f'height="{max(h, 0):.1f}" fill="{fill}">{tip}</rect>')

    def x_axis(self, ticks: Sequence[float], scale, label: str) -> None:
        self.line(self.x0, self.y0, self.x1, self.y0)
        for tick in ticks:
            x = scale(tick)
            self.line(x, self.y0, x, self.y0 + 4)
            self.text(x, self.y0 + 16, fmt(tick))
        if label:
            self.text((self.x0 + self.x1) / 2, self.height - 8, label)

    def y_axis(self, ticks: Sequence[float], scale, label: str) -> None:
        self.line(self.x0, self.y0, self.x0, self.y1)
        for tick in ticks:
            y = scale(tick)
            self.line(self.x0 - 4, y, self.x0, y)
            self.line(self.x0, y, self.x1, y, "#e5e5e5")
            self.text(self.x0 - 6, y + 4, fmt(tick), "end")
        if label:
            mid = (self.y0 + self.y1) / 2
            self.text(12, mid, label, extra=f' transform="rotate(-90 12 {mid:.1f})"')

    def _legend(self, names: Sequence[str]) -> int:
        """Lay the series names out in rows under the title; returns the number of rows."""
        x, row = self.x0, 0
        for i, name in enumerate(names):
            label = _short(name, 48)
            width = 14 + len(label) * 6.2 + 14
            if x + width > self.x1 and x > self.x0:
                x, row = self.x0, row + 1
            y = TOP - 4 + LEGEND_ROW * row
            self.rect(x, y, 10, 10, PALETTE[i % len(PALETTE)])
            self.text(x + 14, y + 9, label, "start")
            x += width
        return row + 1

    def svg(self) -> str:
        w, h = self.width, self.height
        head = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" {FONT} font-size="11">',
            f'<rect width="{w}" height="{h}" fill="#ffffff"/>',
            f'<text x="{w / 2:.1f}" y="20" text-anchor="middle" font-size="13" '
            f'font-weight="bold">{_esc(self.title)}</text>',
        ]
        return "\n".join([*head, *self.parts, "</svg>"])


def _short(text: str, limit: int = MAX_LABEL) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _linear(lo: float, hi: float, out_lo: float, out_hi: float):
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def histogram(series: dict[str, Sequence[float]], *, title: str, xlabel: str, bins: int = 20,
              lo: float | None = None, hi: float | None = None, integer: bool = False,
              markers: Sequence[tuple[float, str]] = ()) -> str:
    """Stacked histogram of one or more value lists over shared bins; ``markers`` are
    vertical reference lines (value, label). ``integer``: whole-number bins, [k, k + w)."""
    values = [v for vs in series.values() for v in vs if math.isfinite(v)]
    lo = min(values, default=0.0) if lo is None else lo
    hi = max(values, default=1.0) if hi is None else hi
    if integer:
        lo, hi = math.floor(lo), math.floor(hi) + 1
        step = math.ceil((hi - lo) / bins)
        bins = math.ceil((hi - lo) / step)
        hi = lo + step * bins
    if hi <= lo:
        hi = lo + 1.0
    width = (hi - lo) / bins
    counts = {name: [0] * bins for name in series}
    for name, vs in series.items():
        for v in vs:
            if math.isfinite(v) and lo <= v <= hi:
                counts[name][min(int((v - lo) / width), bins - 1)] += 1
    totals = [sum(c[i] for c in counts.values()) for i in range(bins)]
    canvas = _Canvas(300, title, legend=list(series) if len(series) > 1 else ())
    y_ticks = nice_ticks(0, max(totals, default=1) or 1, 4, integer=True)
    sx = _linear(lo, hi, canvas.x0, canvas.x1)
    sy = _linear(0, y_ticks[-1], canvas.y0, canvas.y1)
    canvas.y_axis(y_ticks, sy, "count")
    for i in range(bins):
        base = 0
        for k, name in enumerate(series):
            n = counts[name][i]
            if n:
                left, right = sx(lo + i * width), sx(lo + (i + 1) * width)
                canvas.rect(left + 0.5, sy(base + n), right - left - 1, sy(base) - sy(base + n),
                            PALETTE[k % len(PALETTE)],
                            f"{name}: {n} in [{fmt(lo + i * width)}, {fmt(lo + (i + 1) * width)})")
                base += n
    canvas.x_axis([t for t in nice_ticks(lo, hi, 6) if lo - 1e-9 <= t <= hi + 1e-9], sx, xlabel)
    for value, label in markers:
        if lo <= value <= hi:
            x = sx(value)
            canvas.line(x, canvas.y0, x, canvas.y1, "#d62728", ' stroke-dasharray="4 3"')
            canvas.text(x + 3, canvas.y1 + 10, label, "start", ' fill="#d62728"')
    return canvas.svg()


def bar_chart(items: Sequence[tuple[str, float]], *, title: str, xlabel: str = "") -> str:
    """Horizontal bars, one per (label, value), in the given order."""
    label_width = min(max((len(_short(label)) for label, _ in items), default=4) * 6.2 + 12, 260)
    bar = 18
    canvas = _Canvas(TOP + bar * max(len(items), 1) + BOTTOM + 6, title, left=int(label_width),
                     right=56)
    hi = max((v for _, v in items), default=1.0) or 1.0
    ticks = nice_ticks(0, hi, 5, integer=all(isinstance(v, int) for _, v in items))
    sx = _linear(0, ticks[-1], canvas.x0, canvas.x1)
    for i, (label, value) in enumerate(items):
        y = TOP + 4 + i * bar
        canvas.text(canvas.x0 - 6, y + bar / 2 + 3, _short(label), "end")
        canvas.rect(canvas.x0, y + 2, sx(value) - canvas.x0, bar - 4, PALETTE[0],
                    f"{label}: {fmt(value)}")
        canvas.text(sx(value) + 4, y + bar / 2 + 3, fmt(value), "start", ' fill="#555555"')
    canvas.y0 = TOP + 4 + len(items) * bar + 2
    canvas.x_axis(ticks, sx, xlabel)
    canvas.height = canvas.y0 + BOTTOM
    return canvas.svg()


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, title: str,
               xlabel: str, ylabel: str = "") -> str:
    """One line per named (xs, ys) series on shared axes; non-finite points are skipped."""
    clean = {name: [(x, y) for x, y in zip(xs, ys, strict=False)
                    if isinstance(y, int | float) and math.isfinite(y) and math.isfinite(x)]
             for name, (xs, ys) in series.items()}
    points = [p for ps in clean.values() for p in ps]
    xs = [x for x, _ in points] or [0.0, 1.0]
    ys = [y for _, y in points] or [0.0, 1.0]
    canvas = _Canvas(300, title, left=64, legend=list(clean))
    x_ticks = nice_ticks(min(xs), max(xs), 6)
    y_ticks = nice_ticks(min(ys), max(ys), 5)
    sx = _linear(x_ticks[0], x_ticks[-1], canvas.x0, canvas.x1)
    sy = _linear(y_ticks[0], y_ticks[-1], canvas.y0, canvas.y1)
    canvas.y_axis(y_ticks, sy, ylabel)
    canvas.x_axis(x_ticks, sx, xlabel)
    for k, ps in enumerate(clean.values()):
        colour = PALETTE[k % len(PALETTE)]
        if len(ps) == 1:
            canvas.add(f'<circle cx="{sx(ps[0][0]):.1f}" cy="{sy(ps[0][1]):.1f}" r="3" '
                       f'fill="{colour}"/>')
        elif ps:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ps)
            canvas.add(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                       'stroke-width="1.6"/>')
    return canvas.svg()


def interval_chart(items: Sequence[tuple[str, float, float | None, float | None]], *,
                   title: str, lo: float = 0.0, hi: float = 1.0,
                   reference: float | None = 0.5) -> str:
    """A dot with a whisker per (label, value, low, high) on a shared [lo, hi] axis;
    ``reference`` draws a dashed line (0.5: no preference)."""
    label_width = min(max((len(_short(label)) for label, *_ in items), default=4) * 6.2 + 12, 260)
    row = 22
    canvas = _Canvas(TOP + row * max(len(items), 1) + BOTTOM + 6, title, left=int(label_width))
    sx = _linear(lo, hi, canvas.x0, canvas.x1)
    canvas.y0 = TOP + 4 + len(items) * row + 2
    if reference is not None:
        x = sx(reference)
        canvas.line(x, TOP, x, canvas.y0, "#999999", ' stroke-dasharray="4 3"')
    for i, (label, value, low, high) in enumerate(items):
        y = TOP + 4 + i * row + row / 2
        canvas.text(canvas.x0 - 6, y + 4, _short(label), "end")
        if low is not None and high is not None:
            canvas.line(sx(low), y, sx(high), y, PALETTE[0], ' stroke-width="2"')
            for end in (low, high):
                canvas.line(sx(end), y - 5, sx(end), y + 5, PALETTE[0], ' stroke-width="2"')
        canvas.add(f'<circle cx="{sx(value):.1f}" cy="{y:.1f}" r="4" fill="{PALETTE[1]}">'
                   f"<title>{_esc(label)}: {fmt(value)}</title></circle>")
    canvas.x_axis(nice_ticks(lo, hi, 5), sx, "")
    canvas.height = canvas.y0 + BOTTOM - 14
    return canvas.svg()


def img(svg: str, alt: str) -> str:
    """An ``<img>`` tag holding the SVG as a base64 data URI (its width and height set)."""
    width = _attribute(svg, "width")
    height = _attribute(svg, "height")
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return (f'<img class="chart" src="data:image/svg+xml;base64,{data}" width="{width}" '
            f'height="{height}" alt="{_esc(alt)}">')


def _attribute(svg: str, name: str) -> str:
    head = svg[: svg.index(">")]
    start = head.index(f' {name}="') + len(name) + 3
    return head[start : head.index('"', start)]
