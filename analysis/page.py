"""One static HTML page with its PNGs beside it, as the report and the comparison page write
them: no server, no external asset (the machines are offline), readable on a laptop screen.

    page = Page(out_dir, [("intro", "Intro"), ("front", "1. Front")])
    page.section = "front"
    page.figure("front", fig, "caption")            # front.png beside the page
    page.table(df, "caption", sortable=True)        # click a header to sort (sort.js)
    page.write("Title")                             # out_dir/index.html (+ sort.js)

Every text and attribute is escaped, and file names are built from plain characters only:
names carry trial ids read from results.csv, which must stay text and inside `out`.
"""

from __future__ import annotations

import hashlib
import html
import re
import urllib.parse
from pathlib import Path

import numpy as np
import pandas as pd

DPI = 100
SORT_SCRIPT = "sort.js"
_CSS = """body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 1em 2em;color:#222;
line-height:1.35}h1{margin-bottom:.2em}nav{font-size:13px;margin-bottom:1em}nav a{margin-right:
.8em}table{border-collapse:collapse;font-size:12px;margin:.4em 0}td,th{border:1px solid #ccc;
padding:2px 6px;text-align:right;white-space:nowrap}th{background:#eee;position:sticky;top:0}
.scroll{overflow-x:auto;max-width:100%;max-height:36em;overflow-y:auto}
table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:#999}
img{max-width:100%;margin:.4em 0}figure{margin:.6em 0}
.warn{background:#fff3cd;border:2px solid #e0a800;padding:.6em;font-weight:bold}
.answer{background:#e8f4ea;border:2px solid #2e7d32;padding:.7em 1em;font-size:17px}
.note{color:#555;font-style:italic}.thumbs{display:flex;flex-wrap:wrap;gap:8px}
.thumb{margin:0;width:160px;font-size:11px;text-align:center}
.thumb img{width:150px;image-rendering:pixelated;margin:0}
details{margin:.5em 0}summary{cursor:pointer;font-weight:bold}"""
# Sorts a table.sortable by the clicked column: numbers as numbers ("0.62 ± 0.02" by 0.62, but
# a hex trial id such as "4e5a1" stays text), empty cells last, a second click reverses.
SORT_JS = r"""document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows);
      var down = th.dataset.dir !== "desc";
      th.dataset.dir = down ? "desc" : "asc";
      function key(row) {
        var text = row.cells[col] ? row.cells[col].textContent.trim() : "";
        var num = text.match(/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?(?=$|\s)/i);
        return text === "" ? null : (num ? parseFloat(num[0]) : text.toLowerCase());
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return (x === null) - (y === null);
        var c = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                        : (typeof x === "number" ? -1 : 1);
        return down ? -c : c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


class Page:
    """Collects the HTML of each section and writes figures as PNGs beside the page."""

    def __init__(self, out: Path, sections=(("main", ""),)):
        self.out = Path(out)
        self.sections = list(sections)
        self.parts: dict[str, list[str]] = {sid: [] for sid, _ in self.sections}
        self.section = self.sections[0][0]
        self.images: list[Path] = []
        self.sortable = False
        self.lead = ""  # HTML shown under the title, above the table of contents

    def html(self, text: str) -> None:
        self.parts[self.section].append(text)

    def text(self, text: str, cls: str | None = None) -> None:
        self.html(f"<p{f' class={cls!r}' if cls else ''}>{html.escape(text)}</p>")

    def note(self, text: str) -> None:
        self.text(text, "note")

    def warn(self, text: str) -> None:
        self.html(f"<div class='warn'>{html.escape(text)}</div>")

    def table(self, df: pd.DataFrame, caption: str = "", sortable: bool = False) -> None:
        if caption:
            self.html(f"<h4>{html.escape(caption)}</h4>")
        if df.empty:
            self.note("(no rows)")
            return
        self.sortable |= sortable
        table = df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0,
                           classes="sortable" if sortable else None)
        self.html(f"<div class='scroll'>{table}</div>")

    def figure(self, name: str, fig, caption: str = "") -> None:
        path = self.out / f"{file_name(name)}.png"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        self.images.append(path)
        self.html(f'<figure><img src="{_src(path)}" alt="{html.escape(name, quote=True)}">'
                  f"<figcaption class='note'>{html.escape(caption)}</figcaption></figure>")

    def thumbnails(self, items: list[tuple[str, np.ndarray, str]]) -> None:
        """A wrapping row of small images: (name, uint8 image array, caption) each."""
        from matplotlib.image import imsave

        cells = []
        for name, array, caption in items:
            path = self.out / f"{file_name(name)}.png"
            imsave(path, array, cmap="gray", vmin=0, vmax=255)
            self.images.append(path)
            cells.append(f'<figure class="thumb"><img src="{_src(path)}" '
                         f'alt="{html.escape(name, quote=True)}"><figcaption>'
                         f"{html.escape(caption)}</figcaption></figure>")
        self.html(f"<div class='thumbs'>{''.join(cells)}</div>")

    def details(self, summary: str) -> _Details:
        """`with page.details("more"):` puts what is added inside a collapsed block."""
        return _Details(self, summary)

    def render(self, title: str) -> str:
        toc = "".join(f"<a href='#{sid}'>{html.escape(t)}</a>" for sid, t in self.sections if t)
        body = [f"<section id='{sid}'>" + (f"<h2>{html.escape(t)}</h2>" if t else "")
                + "".join(self.parts[sid]) + "</section>" for sid, t in self.sections]
        script = f"<script src='{SORT_SCRIPT}' defer></script>" if self.sortable else ""
        return (f"<!doctype html><html><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style>{script}</head><body>"
                f"<h1>{html.escape(title)}</h1>{self.lead}"
                + (f"<nav>{toc}</nav>" if len(self.sections) > 1 else "")
                + "\n".join(body) + "</body></html>")

    def write(self, title: str, name: str = "index.html") -> Path:
        """The page as `out/name`, with the sorting script beside it when a table needs it."""
        if self.sortable:
            (self.out / SORT_SCRIPT).write_text(SORT_JS)
        path = self.out / name
        path.write_text(self.render(title))
        return path


class _Details:
    def __init__(self, page: Page, summary: str):
        self.page, self.summary = page, summary

    def __enter__(self):
        self.page.html(f"<details><summary>{html.escape(self.summary)}</summary>")
        return self.page

    def __exit__(self, *exc):
        self.page.html("</details>")


def file_name(name: str) -> str:
    """A figure's file name: `name` when it is plain, else its plain characters and a digest
    (names carry trial ids from results.csv, which must not reach outside the page's folder)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".")[:80]
    if safe == name:
        return name
    return f"{safe}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def _src(path: Path) -> str:
    return html.escape(urllib.parse.quote(path.name), quote=True)


def pm(mean, std, fmt: str = ".3f") -> str:
    """`mean ± std`, or `mean` alone when there is no spread to show (one seed). A sign in
    `fmt` ("+.3f", for differences) is the mean's only."""
    if mean is None or pd.isna(mean):
        return ""
    spread = "" if std is None or pd.isna(std) else f" ± {std:{fmt.lstrip('+')}}"
    return f"{mean:{fmt}}" + spread
