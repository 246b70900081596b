"""Self-contained HTML building blocks: embedded PNGs, number tables, sections, one style sheet.

Everything is inline (no external CSS, JS or image files) so the report can be mailed or archived
as a single file. Numbers in tables carry class "num" and are always plain decimals; a value that
is undefined (e.g. precision when the model marked nothing) is shown as "n/a" with class "na", so
a reader never sees "nan" or a Python None.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #1d2433; max-width: 1100px;
       margin: 24px auto; padding: 0 20px; line-height: 1.45; background: #fff; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 20px; margin-top: 36px; border-bottom: 2px solid #dde3ee;
     padding-bottom: 4px; } h3 { font-size: 16px; margin-bottom: 6px; }
p.lead { color: #4a5568; margin-top: 0; } .explain { background: #f4f7fb; border-left: 4px solid #5b8def;
     padding: 8px 14px; margin: 10px 0 14px; font-size: 14.5px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #cfd7e6; padding: 5px 10px; text-align: left; vertical-align: top; }
th { background: #eef2f9; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { text-align: right; color: #8a94a6; } tr.total td { font-weight: bold; }
figure { margin: 10px 0 20px; } figure img { max-width: 100%; border: 1px solid #dde3ee; }
figcaption { font-size: 13px; color: #4a5568; margin-top: 4px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; } .grid figure { flex: 1 1 300px; margin: 0; }
.ok { color: #17753a; font-weight: bold; } .bad { color: #b3261e; font-weight: bold; }
code { background: #f1f3f7; padding: 1px 4px; border-radius: 3px; font-size: 13px; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px -1px 10px; border: 1px solid #888; }
"""


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(path: str | Path) -> str | None:
    """`data:image/png;base64,...` for a PNG file, or None if it is missing or not a PNG."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(PNG_SIGNATURE):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(path: str | Path | None, caption: str, alt: str | None = None, width: int | None = None) -> str:
    """An embedded picture with its caption; a visible note instead if the file is missing."""
    uri = png_data_uri(path) if path else None
    if uri is None:
        return f'<p class="explain">Picture not available: {esc(caption)}</p>'
    style = f' style="max-width:{width}px"' if width else ""
    return (f'<figure><img src="{uri}" alt="{esc(alt or caption)}"{style}>'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def number_cell(value, digits: int = 3, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return '<td class="na">n/a</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f'<td class="num">{value:+.{digits}f}</td>' if signed else f'<td class="num">{value:.{digits}f}</td>'


def table(header: list[str], rows: list[list[str]], css_rows: list[str] | None = None) -> str:
    """`rows` hold ready cells (use `number_cell` / `text_cell`); header cells are plain text."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{css_rows[index]}"' if css_rows and css_rows[index] else ""
        body.append(f"<tr{css}>" + "".join(row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def text_cell(text) -> str:
    return f"<td>{esc(text)}</td>"


def section(title: str, explanation: str, body: str, anchor: str) -> str:
    """A report section: heading, a short plain-language explanation, then the content."""
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2><div class="explain">{explanation}</div>{body}</section>'


def page(title: str, lead: str, sections: list[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1><p class=\"lead\">{lead}</p>"
            + "".join(sections) + "</body></html>\n")
