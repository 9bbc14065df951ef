"""The server-rendered pages of the labelling service: instructions and statistics.

Both are plain HTML built from escaped text (every value goes through ``html.escape``), with
the agreement figures in elements that carry ids, and the judge's calibration drawn as inline
SVG, so the pages need no script to read and no build step. The labelling page itself is a
static file (``static/label.html``) driven by ``static/label.js``.
"""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
[hidden] { display: none !important; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 16px;
       color: #1d1d1f; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 20px; }
td, th { border: 1px solid #ccd; padding: 4px 10px; text-align: left; }
tr.flagged td { background: #fde8e8; }
.figure { font-size: 28px; font-weight: 600; }
.cards { display: flex; gap: 18px; flex-wrap: wrap; }
.card { border: 1px solid #ccd; border-radius: 8px; padding: 10px 16px; min-width: 180px; }
pre.text { white-space: pre-wrap; background: #f6f6f8; padding: 12px; border-radius: 6px; }
textarea { width: 100%; min-height: 360px; font: 14px/1.4 ui-monospace, monospace; }
"""


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return escape(str(value))


def _shell(title: str, page: str, body: str) -> str:
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
        "<meta name=\"viewport\" "
        "content=\"width=device-width, initial-scale=1\">"
        f"<style>{STYLE}</style></head><body data-page=\"{escape(page)}\">"
        "<nav><a href=\"/label\">Label</a><a href=\"/label/instructions\">Instructions</a>"
        "<a href=\"/label/stats\">Statistics</a></nav>"
        f"{body}<script src=\"/label/label.js\"></script></body></html>")


def instructions_page(text: str, editable: bool = True) -> str:
    """The instructions as text, with an editor the page script opens (for those who may
    edit them)."""
    editor = (
        "<p><button id=\"edit\" type=\"button\">Edit</button></p>"
        "<div id=\"editor\" hidden><textarea id=\"instructions-edit\"></textarea>"
        "<p><button id=\"save\" type=\"button\">Save</button> "
        "<span id=\"save-status\" role=\"status\"></span></p></div>")
    body = ("<h1>Instructions for annotators</h1>"
            f"<pre class=\"text\" id=\"instructions-text\">{escape(text)}</pre>"
            f"{editor if editable else ''}")
    return _shell("Labelling instructions", "instructions", body)


def calibration_svg(bins: list[dict[str, Any]], width: int = 420, height: int = 300) -> str:
    """Judge p_a (x, binned) against the share of pairs the humans gave to A (y); dot area
    grows with the number of pairs in the bin; the diagonal is perfect calibration."""
    pad = 50
    inner_w, inner_h = width - 2 * pad, height - 2 * pad

    def x(v: float) -> float:
        return pad + v * inner_w

    def y(v: float) -> float:
        return height - pad - v * inner_h

    parts = [
        f"<svg id=\"calibration-plot\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" "
        f"height=\"{height}\" viewBox=\"0 0 {width} {height}\" role=\"img\" "
        "aria-label=\"Judge p_a against human choice of A\">",
        f"<rect x=\"{pad}\" y=\"{pad}\" width=\"{inner_w}\" height=\"{inner_h}\" "
        "fill=\"#fafafc\" stroke=\"#99a\"/>",
        f"<line x1=\"{x(0)}\" y1=\"{y(0)}\" x2=\"{x(1)}\" y2=\"{y(1)}\" stroke=\"#bbc\" "
        "stroke-dasharray=\"4 4\"/>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f"<text x=\"{x(tick)}\" y=\"{height - pad + 16}\" font-size=\"11\" "
                     f"text-anchor=\"middle\">{tick:g}</text>")
        parts.append(f"<text x=\"{pad - 6}\" y=\"{y(tick) + 4}\" font-size=\"11\" "
                     f"text-anchor=\"end\">{tick:g}</text>")
    parts.append(f"<text x=\"{width / 2}\" y=\"{height - 8}\" font-size=\"12\" "
                 "text-anchor=\"middle\">judge p_a</text>")
    parts.append(f"<text x=\"12\" y=\"{height / 2}\" font-size=\"12\" text-anchor=\"middle\" "
                 f"transform=\"rotate(-90 12 {height / 2})\">humans chose A</text>")
    most = max([b["n"] for b in bins] + [1])
    points = []
    for b in bins:
        if b["human_a"] is None:
            continue
        cx, cy = x((b["low"] + b["high"]) / 2), y(b["human_a"])
        radius = 3 + 9 * (b["n"] / most) ** 0.5
        points.append((cx, cy))
        parts.append(f"<circle class=\"bin\" cx=\"{cx:.1f}\" cy=\"{cy:.1f}\" r=\"{radius:.1f}\" "
                     f"fill=\"#3a6ea5\" fill-opacity=\"0.75\"><title>p_a {b['low']:g}-"
                     f"{b['high']:g}: {b['n']} pairs, {b['human_a']:.2f} chose A</title>"
                     "</circle>")
    if len(points) > 1:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        parts.append(f"<polyline points=\"{path}\" fill=\"none\" stroke=\"#3a6ea5\"/>")
    if not points:
        parts.append(f"<text x=\"{width / 2}\" y=\"{height / 2}\" font-size=\"13\" "
                     "text-anchor=\"middle\">no pairs with judge p_a and a human label yet"
                     "</text>")
    parts.append("</svg>")
    return "".join(parts)


def _card(title: str, ident: str, value: Any, note: str) -> str:
    return (f"<div class=\"card\"><div>{escape(title)}</div>"
            f"<div class=\"figure\" id=\"{ident}\">{_num(value)}</div>"
            f"<div>{escape(note)}</div></div>")


def stats_page(stats: dict[str, Any]) -> str:
    """Agreement figures, the judge's calibration, annotators and consensus per pair."""
    progress = stats["progress"]
    judge = stats.get("judge_vs_human") or {}
    cards = "".join([
        _card("Fleiss' kappa", "fleiss-kappa", stats["fleiss_kappa"],
              f"{stats['fleiss_units']} pairs with two or more counted votes"),
        _card("Mean pairwise Cohen's kappa", "cohen-kappa", stats["mean_cohen_kappa"],
              f"{stats['cohen_rater_pairs']} pairs of annotators"),
        _card("Judge agrees with humans", "judge-accuracy", judge.get("accuracy"),
              f"{judge.get('n', 0)} pairs with both labels"),
        _card("Judge-human Cohen's kappa", "judge-kappa", judge.get("kappa"), "chance-corrected"),
    ])
    annotators = "".join(
        f"<tr class=\"{'flagged' if a['flagged'] else ''}\" data-annotator=\"{escape(a['name'])}\">"
        f"<td>{escape(a['name'])}</td><td>{a['votes']}</td><td>{a['gold_answered']}</td>"
        f"<td>{_num(a['gold_accuracy'])}</td>"
        f"<td class=\"flag\">{'flagged: excluded' if a['flagged'] else 'ok'}</td></tr>"
        for a in stats["annotators"])
    consensus = "".join(
        f"<tr data-pair=\"{escape(c['pair_id'])}\"><td>{escape(c['pair_id'])}</td>"
        f"<td>{escape(c['votes'])}</td><td class=\"consensus\">{_num(c['consensus'])}</td>"
        f"<td>{'yes' if c['split'] else 'no'}</td><td>{'yes' if c['complete'] else 'no'}</td>"
        f"<td class=\"human\">{_num(c['human'])}</td></tr>"
        for c in stats.get("consensus", []))
    settings = stats["settings"]
    body = (
        "<h1>Labelling statistics</h1>"
        f"<p id=\"progress\">{progress['complete']} of {progress['items']} items complete, "
        f"{progress['votes']} votes.</p>"
        f"<div class=\"cards\">{cards}</div>"
        "<h2>Judge calibration</h2>" + calibration_svg(stats["calibration"]) +
        "<h2>Annotators</h2>"
        f"<p>Flagged below {settings['gold_threshold']:.0%} gold accuracy after "
        f"{settings['min_gold']} gold items; flagged votes do not count.</p>"
        "<table id=\"annotators\"><tr><th>annotator</th><th>votes</th><th>gold answered</th>"
        f"<th>gold accuracy</th><th>status</th></tr>{annotators}</table>"
        "<h2>Consensus</h2><table id=\"consensus\"><tr><th>pair</th><th>counted votes</th>"
        "<th>consensus</th><th>split</th><th>complete</th><th>human</th></tr>"
        f"{consensus}</table>")
    return _shell("Labelling statistics", "stats", body)
