"""The report page's HTML: the ``Section`` record, escaped building blocks and the page itself.

Stored model output may hold markup or script, so every text shown on the report goes through
one of these helpers, which HTML-escape it (``esc``, ``table``, ``para``, ``heading``), and
numbers, dicts and None read the same everywhere (``show``). ``render_page`` fills
``align/report/templates/report.html``, whose Content-Security-Policy forbids script and remote
loads, with a contents list, the notes of left-out sections and the sections, so the page stays
inert and self-contained; ``write_atomic`` puts it in place through a temporary sibling. The
sections themselves are built in ``align.report.build``; dataset cards (``align.report.card``) use
the same pieces.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

from align.report import plots
from datagen.jsonl import atomic_write

TEMPLATE = Path(__file__).parent / "templates" / "report.html"


@dataclass(frozen=True)
class Section:
    """One part of the page: an id for links, a title, the HTML body (empty: left out, with
    ``note`` saying why)."""

    key: str
    title: str
    body: str = ""
    note: str = ""


def esc(value: Any) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def show(value: Any) -> str:
    """A value as short display text (numbers rounded, dicts as "k v, ...", None as "-")."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return plots.fmt(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {show(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(show(v) for v in value) or "-"
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; every cell is escaped, numbers are right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{esc(show(v))}</td>' if isinstance(v, int | float)
            and not isinstance(v, bool) else f"<td>{esc(show(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f'<table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def para(text: str, css: str = "") -> str:
    return f'<p class="{css}">{esc(text)}</p>' if css else f"<p>{esc(text)}</p>"


def heading(text: str) -> str:
    return f"<h3>{esc(text)}</h3>"


def figure(svg: str, alt: str) -> str:
    return f"<figure>{plots.img(svg, alt)}</figure>"


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M UTC")


def clip(text: str, limit: int = 400) -> str:
    """Text cut to ``limit`` characters, ending in an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def compact(summary: Any, limit: int = 240) -> str:
    """A run summary as one short line of its numbers and counts."""
    if not isinstance(summary, dict):
        return show(summary)
    parts = [f"{k} {show(v)}" if not isinstance(v, dict) else f"{k}: {show(v)}"
             for k, v in summary.items()
             if k != "run_id" and isinstance(v, int | float | dict | str) and v != {}]
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The HTML page: a contents list, the notes of left-out sections, then the sections."""
    shown = [s for s in sections if s.body]
    toc = "".join(f'<li><a href="#{esc(s.key)}">{esc(s.title)}</a></li>' for s in shown)
    omitted = "".join(f"<li><b>{esc(s.title)}</b>: {esc(s.note)}</li>"
                      for s in sections if not s.body)
    body = "\n".join(f'<section id="{esc(s.key)}"><h2>{esc(s.title)}</h2>\n{s.body}\n</section>'
                     for s in shown)
    template = Template(TEMPLATE.read_text(encoding="utf-8"))
    return template.substitute(
        title=esc(title), subtitle=esc(subtitle), toc=toc,
        omitted=f'<aside class="omitted"><h2>Not in this report</h2><ul>{omitted}</ul></aside>'
        if omitted else "", sections=body)


def write_atomic(path: Path, text: str) -> None:
    """Write text through a temporary sibling renamed over ``path``."""
    with atomic_write(path) as out:
        out.write(text)
