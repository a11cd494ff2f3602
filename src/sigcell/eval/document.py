"""A tiny document model rendered to both Markdown and self-contained HTML (images as PNG files)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

__all__ = ["Document"]

_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; max-width: 1150px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
img { max-width: 100%; } .note { color: #555; font-size: 0.92em; }
.warn { background: #fff4e0; border-left: 4px solid #e69500; padding: 0.5em 0.8em; }
"""


@dataclass
class Document:
    """Blocks of a report: headings, paragraphs, tables, images and preformatted text."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str, style: str = "") -> None:
        """A paragraph; ``**bold**`` and `` `code` `` are the only inline markup."""
        self.blocks.append(("p", text, style))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def image(self, path: str, alt: str) -> None:
        self.blocks.append(("img", path, alt))

    def pre(self, text: str) -> None:
        self.blocks.append(("pre", text))

    # -- rendering ------------------------------------------------------------------------------------
    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "p":
                out += [("> " if block[2] == "warn" else "") + block[1], ""]
            elif kind == "ul":
                out += [f"- {item}" for item in block[1]] + [""]
            elif kind == "table":
                header, rows = block[1], block[2]
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
                out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
                out.append("")
            elif kind == "img":
                out += [f"![{block[2]}]({block[1]})", ""]
            elif kind == "pre":
                out += ["```", block[1].rstrip(), "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        body = [f"<h1>{_inline(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                body.append(f"<h{block[1]}>{_inline(block[2])}</h{block[1]}>")
            elif kind == "p":
                cls = f' class="{block[2]}"' if block[2] else ""
                body.append(f"<p{cls}>{_inline(block[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{_inline(h)}</th>" for h in block[1])
                rows = "".join("<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in row) + "</tr>"
                               for row in block[2])
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif kind == "img":
                body.append(f'<p><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}"></p>')
            elif kind == "pre":
                body.append(f"<pre>{html.escape(block[1])}</pre>")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Escape HTML and turn ``**bold**`` / `` `code` `` into tags."""
    import re

    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)
