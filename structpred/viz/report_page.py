"""One self-contained HTML page from a report's parts: tables, PNGs inlined, CSS inline.

The page has no script and no external URL: every picture is a ``data:image/png;base64``
URI, so the file works opened from disk, mailed or archived. Every text that comes from data
(class names, file names, the data spec) is HTML-escaped by jinja2's autoescaping.
``GENERATOR`` marks a page as ours: a report refuses to overwrite an ``index.html`` without it.
"""

from __future__ import annotations

import base64
import heapq
import io
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .draw import to_uint8_image

GENERATOR = "structpred report"


def png_data_uri(image: Tensor | bytes) -> str:
    """A ``uint8``/float ``Tensor[3, H, W]`` picture (or PNG bytes) as a ``data:image/png`` URI."""
    if isinstance(image, Tensor):
        pixels = to_uint8_image(image).permute(1, 2, 0).contiguous().numpy()  # (3, H, W) -> (H, W, 3)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", optimize=True)
        image = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def format_value(value: float) -> str:
    """A metric as ``eval`` prints it: 4 decimals; ``-1`` (undefined in COCO) and NaN as ``n/a``."""
    if math.isnan(value) or value == -1.0:
        return "n/a"
    return f"{value:.4f}"


@dataclass
class Table:
    """A table: column titles and rows of already formatted cells; ``heat`` colours numeric
    cells by value (0..``heat_max``) as in a confusion matrix."""

    columns: list[str]
    rows: list[list[str]]
    heat: bool = False
    heat_max: float = 1.0
    caption: str = ""

    def shade(self, cell: str) -> str:
        """Background of a cell: a blue of strength value / heat_max (white for text or 0)."""
        try:
            v = float(cell)
        except ValueError:
            return ""
        if not self.heat or self.heat_max <= 0 or v <= 0:
            return ""
        a = min(1.0, v / self.heat_max)
        return f"background: rgba(31, 119, 180, {0.12 + 0.6 * a:.2f})"


@dataclass
class Picture:
    """One picture of a gallery entry: what it shows and its data URI."""

    label: str
    uri: str


@dataclass
class GalleryItem:
    """An image of the gallery: its caption (index, file, score) and its pictures."""

    caption: str
    pictures: list[Picture]


@dataclass
class ReportPage:
    """Everything the page shows, in order; empty parts are left out, ``notes`` say why."""

    title: str
    identity: list[tuple[str, str]]
    metrics: Table
    per_class: Table | None = None
    per_class_note: str = ""
    pr_uri: str = ""
    pr_note: str = ""
    confusion: Table | None = None
    confusion_note: str = ""
    gallery_rule: str = ""
    best: list[GalleryItem] = field(default_factory=list)
    worst: list[GalleryItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="generator" content="{{ generator }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ page.title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
caption { text-align: left; color: #555; padding: .2em 0; }
td, th { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
dl.identity { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; }
dl.identity dt { font-weight: 600; }
dl.identity dd { margin: 0; font-family: monospace; word-break: break-all; }
.note { color: #555; max-width: 60em; } .gallery { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; border: 1px solid #ddd; padding: .4em; background: #fafafa; }
figure .pics { display: flex; gap: .4em; } figure .pic { text-align: center; font-size: .85em; color: #555; }
figure img { display: block; image-rendering: pixelated; max-width: 320px; }
figcaption { font-size: .85em; margin-top: .3em; max-width: 660px; word-break: break-all; }
</style>
</head>
<body>
<h1>{{ page.title }}</h1>
<dl class="identity">
{% for key, value in page.identity %}<dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}</dl>
{% macro table(t) %}
<table>{% if t.caption %}<caption>{{ t.caption }}</caption>{% endif %}
<thead><tr>{% for c in t.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for row in t.rows %}<tr>{% for cell in row %}
<td{% if t.heat and not loop.first %} style="{{ t.shade(cell) }}"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% endmacro %}
<h2 id="metrics">Metrics</h2>
{{ table(page.metrics) }}
{% if page.per_class %}<h2 id="per-class">Per class</h2>
{% if page.per_class_note %}<p class="note">{{ page.per_class_note }}</p>{% endif %}
{{ table(page.per_class) }}{% endif %}
{% if page.pr_uri or page.pr_note %}<h2 id="pr">Precision-recall curves</h2>
{% if page.pr_note %}<p class="note">{{ page.pr_note }}</p>{% endif %}
{% if page.pr_uri %}<img src="{{ page.pr_uri }}" alt="precision-recall curves per class">{% endif %}
{% endif %}
{% if page.confusion %}<h2 id="confusion">Confusion between classes</h2>
{% if page.confusion_note %}<p class="note">{{ page.confusion_note }}</p>{% endif %}
{{ table(page.confusion) }}{% endif %}
{% if page.gallery_rule %}<h2 id="gallery">Best and worst images</h2>
<p class="note">{{ page.gallery_rule }}</p>
{% for name, items in (("Best", page.best), ("Worst", page.worst)) %}{% if items %}<h3>{{ name }}</h3>
<div class="gallery">{% for item in items %}<figure><div class="pics">{% for p in item.pictures %}
<div class="pic"><img src="{{ p.uri }}" alt="{{ p.label }}">{{ p.label }}</div>{% endfor %}</div>
<figcaption>{{ item.caption }}</figcaption></figure>
{% endfor %}</div>{% endif %}{% endfor %}{% endif %}
{% if page.notes %}<h2 id="notes">Notes</h2>
<ul>{% for n in page.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</body>
</html>
"""


def render_page(page: ReportPage) -> str:
    """The page as one HTML string (every value autoescaped; pictures must be data URIs)."""
    uris = [page.pr_uri] + [p.uri for item in page.best + page.worst for p in item.pictures]
    bad = [u[:40] for u in uris if u and not u.startswith("data:image/png;base64,")]
    if bad:
        raise ValueError(f"report pictures must be inlined PNG data URIs, got {bad[0]!r}...")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE).render(page=page, generator=GENERATOR)


def is_our_page(text: str) -> bool:
    """Whether an existing ``index.html``'s text is a page this module wrote."""
    return f'<meta name="generator" content="{GENERATOR}">' in text


def metric_rows(metrics: dict[str, object], skip: Sequence[str] = ()) -> Table:
    """The metric table: one row per figure, as ``structpred eval`` prints it (4 decimals; a
    vector as its list), except the ``skip`` keys (shown in their own section)."""
    rows = []
    for key, value in metrics.items():
        if key in skip:
            rows.append([key, "(below)"])
            continue
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value)
        if isinstance(value, float):
            rows.append([key, f"{value:.4f}"])
        elif isinstance(value, Tensor):
            rows.append([key, str([round(v, 4) for v in value.flatten().tolist()])])
        else:
            rows.append([key, str(value)])
    return Table(["metric", "value"], rows)


class Extremes:
    """The ``k`` best and ``k`` worst items seen, NaN scores left out; memory: ``2 k`` payloads.

    One order ranks the items: by score, then earlier before later. The best are its top
    ``k``, the worst its bottom ``k``, so with ``2 k`` items or more no item is in both (equal
    scores: the first items seen are "best", the last "worst").
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._best: list[tuple[float, int, int, Any]] = []  # min-heap on score
        self._worst: list[tuple[float, int, int, Any]] = []  # min-heap on -score
        self._count = itertools.count()

    def add(self, score: float, index: int, payload: Any) -> None:
        """Offer one item; kept only while among the best or worst ``k``."""
        if self.k <= 0 or score != score:
            return
        n = next(self._count)
        for heap, entry in (
            (self._best, (score, -n, index, payload)),
            (self._worst, (-score, n, index, payload)),
        ):
            if len(heap) < self.k:  # each heap's smallest entry is the first to go
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                heapq.heapreplace(heap, entry)

    def best(self) -> list[tuple[float, int, Any]]:
        """``(score, index, payload)`` best first."""
        return [(s, i, p) for s, _, i, p in sorted(self._best, reverse=True)]

    def worst(self) -> list[tuple[float, int, Any]]:
        """``(score, index, payload)`` worst first (without any item already in :meth:`best`)."""
        shown = {i for _, i, _ in self.best()}
        return [(-s, i, p) for s, _, i, p in sorted(self._worst, reverse=True) if i not in shown]


def display_scale(H: int, W: int) -> int:
    """Integer zoom that brings a small image to ~256 px on its longer side (at most 4x)."""
    return max(1, min(4, 256 // max(H, W, 1)))


def zoom(x: Tensor, s: int) -> Tensor:
    """Nearest-neighbour zoom of ``[C, H, W]`` (any dtype) by ``s``."""
    if s == 1:
        return x
    return F.interpolate(x[None].float(), scale_factor=s, mode="nearest")[0].to(x.dtype)  # (C, sH, sW)
