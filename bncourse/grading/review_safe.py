"""What the formgrader shows an instructor holds no script: the autograded notebook, sanitized.

nbgrader's formgrader renders a submission's *autograded* notebook (nbconvert's HTML exporter, on
the Jupyter server's own origin, with the instructor's session) without sanitizing it: a student's
``display(HTML('<script>...'))`` output, or a markdown cell holding ``<script>`` or an ``onerror=``
handler, runs as the instructor and can set manual scores through the formgrader's own API.

``SanitizeForReview`` (an autograde preprocessor, after ``VerifyChecks``) rewrites, in the
autograded copy only (the submitted notebook is never touched):

- every output's data: mime types the formgrader renders as markup (``text/html``,
  ``text/markdown``, ``image/svg+xml``, ``text/latex``) are kept as they are when they hold nothing
  active, else cleaned (``bleach``: a short allowlist of tags, no ``on*`` attribute, only http(s)
  and mailto links), else dropped; base64 images are kept only when they are base64; every other
  mime type (``application/javascript``, widgets, ...) is dropped; output metadata keeps only
  numeric ``width``/``height``;
- markdown and raw cells: a source whose rendering holds something active is cleaned the same way,
  with a note saying so; attachments that are not plain base64 images are dropped;
- the notebook's ``widgets`` metadata (the HTML exporter embeds widget state and its loader).

"Active": a ``script``, ``iframe``, ``object``, ``embed``, ``frame``, ``base``, ``meta``,
``link``, ``form``, ``style`` or SVG ``foreignObject`` element, an ``on*`` or ``srcdoc``
attribute, or a URL attribute whose scheme is ``javascript:``, ``vbscript:`` or ``data:`` (other
than an image). ``active_markup(html)`` lists what it finds (for tests and the log).
"""

from __future__ import annotations

import base64
import binascii
import re
from html.parser import HTMLParser

from nbgrader.preprocessors import NbGraderPreprocessor

__all__ = ["SANITIZED_NOTE", "SanitizeForReview", "active_markup", "clean_markup"]

ACTIVE_TAGS = {"script", "iframe", "object", "embed", "frame", "frameset", "applet", "base", "meta", "link",
               "form", "style", "foreignobject", "template", "svg:script", "math"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "xlink:href", "data", "background", "poster", "lowsrc",
                  "dynsrc", "codebase", "cite", "longdesc", "usemap", "ping", "manifest", "srcset"}
MARKUP_TYPES = ("text/html", "text/markdown", "image/svg+xml", "text/latex")
BASE64_IMAGES = ("image/png", "image/jpeg", "image/gif")
SANITIZED_NOTE = ("*[The grader removed active content (script, event handlers or javascript: links) from this "
                  "cell before review; the submitted notebook is unchanged.]*\n\n")
_SAFE_TAGS = ["a", "abbr", "b", "blockquote", "br", "code", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr",
              "i", "img", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td", "th",
              "thead", "tr", "ul", "details", "summary"]
_SAFE_ATTRIBUTES = {"a": ["href", "title"], "img": ["src", "alt", "width", "height"], "*": ["class"]}


def _scheme(value: str) -> str:
    """The scheme of a URL as a browser reads it (control characters and blanks inside it ignored)."""
    compact = re.sub(r"[\x00-\x20\x7f]+", "", value or "").lower()
    return compact.split(":", 1)[0] if ":" in compact else ""


class _Finder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        tag = tag.lower()
        if tag in ACTIVE_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            name = (name or "").lower()
            if name.startswith("on") or name == "srcdoc":
                self.found.append(f"{name}= on <{tag}>")
            elif name in URL_ATTRIBUTES or name.endswith(":href"):
                for part in (value or "").split(","):  # srcset: "url 1x, url 2x"
                    scheme = _scheme(part.strip())
                    if scheme in ("javascript", "vbscript", "livescript") or (
                            scheme == "data" and not re.sub(r"\s", "", part).lower().startswith(
                                tuple(f"data:{t}" for t in BASE64_IMAGES))):
                        self.found.append(f"{scheme}: URL in {name}= on <{tag}>")

    handle_startendtag = handle_starttag


def active_markup(html: str) -> list[str]:
    """What in ``html`` would run script in a browser (empty: nothing found)."""
    finder = _Finder()
    try:
        finder.feed(str(html))
        finder.close()
    except Exception:  # noqa: BLE001 - markup a parser cannot read is not shown as it is
        return ["unreadable markup"]
    return finder.found


def _markdown_html(source: str) -> str:
    from nbconvert.filters import markdown2html

    try:
        return markdown2html(source)
    except Exception:  # noqa: BLE001 - read it as HTML then
        return source


def clean_markup(text: str) -> str:
    """``text`` with every tag but a short allowlist escaped and only http(s)/mailto links kept."""
    import bleach

    cleaned = bleach.clean(str(text), tags=_SAFE_TAGS, attributes=_SAFE_ATTRIBUTES,
                           protocols=["http", "https", "mailto"], strip=False, strip_comments=True)
    # markdown's own link syntax is not HTML to bleach: [x](javascript:...) stays a link when rendered
    return re.sub(r"(?i)(j\s*a\s*v\s*a\s*s\s*c\s*r\s*i\s*p\s*t|v\s*b\s*s\s*c\s*r\s*i\s*p\s*t)\s*:",
                  "blocked-scheme:", cleaned)


def _as_code_block(text: str) -> str:
    """``text`` as an indented markdown code block: rendered escaped, as text, whatever it holds."""
    return "\n".join("    " + line for line in str(text).splitlines())


def _is_base64(value) -> bool:
    text = "".join(value) if isinstance(value, list) else value
    if not isinstance(text, str):
        return False
    try:
        base64.b64decode(re.sub(r"\s", "", text), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _safe_metadata(metadata) -> dict:
    out: dict = {}
    for mime, meta in (metadata or {}).items():
        if mime in BASE64_IMAGES and isinstance(meta, dict):
            sizes = {k: v for k, v in meta.items() if k in ("width", "height")
                     and isinstance(v, (int, float)) and not isinstance(v, bool)}
            if sizes:
                out[mime] = sizes
    return out


class SanitizeForReview(NbGraderPreprocessor):
    """Autograde step: the autograded notebook shows nothing that runs script (see the module docstring)."""

    _found: list[str] = []

    def preprocess(self, nb, resources):
        self._found: list[str] = []
        nb.metadata.pop("widgets", None)
        nb, resources = super().preprocess(nb, resources)
        if self._found:
            info = (resources or {}).get("nbgrader") or {}
            self.log.warning("Active content removed before review (%s): %s", info.get("student", "?"),
                             "; ".join(self._found[:10]))
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type in ("markdown", "raw"):
            self._clean_text_cell(cell, index)
        elif cell.cell_type == "code":
            cell.outputs = [self._clean_output(o, index) for o in cell.get("outputs", [])]
        return cell, resources

    def _clean_text_cell(self, cell, index: int) -> None:
        attachments = cell.get("attachments") or {}
        for name in list(attachments):
            kept = {m: v for m, v in (attachments[name] or {}).items() if m in BASE64_IMAGES and _is_base64(v)}
            if kept != attachments[name]:
                self._found.append(f"cell {index}: attachment {name!r}")
            attachments[name] = kept
        rendered = _markdown_html(cell.source) if cell.cell_type == "markdown" else cell.source
        found = active_markup(rendered)
        if not found:
            return
        self._found.append(f"cell {index}: {', '.join(found[:3])}")
        cleaned = clean_markup(cell.source)
        if active_markup(_markdown_html(cleaned)):  # never show what the cleaner missed: the text, as text
            cleaned = _as_code_block(cell.source)
        cell.source = SANITIZED_NOTE + cleaned

    def _clean_output(self, output, index: int):
        if output.get("output_type") not in ("display_data", "execute_result"):
            return output  # stream and error text is escaped by every template
        data = output.get("data", {})
        for mime in list(data):
            value = data[mime]
            text = "".join(value) if isinstance(value, list) else value
            if mime == "text/plain":
                continue
            if mime in BASE64_IMAGES:
                if not _is_base64(value):
                    self._found.append(f"cell {index}: {mime} that is not base64")
                    del data[mime]
                continue
            if mime in MARKUP_TYPES and isinstance(text, str):
                found = active_markup(_markdown_html(text) if mime == "text/markdown" else text)
                if not found:
                    continue
                self._found.append(f"cell {index}: {mime} with {', '.join(found[:3])}")
                cleaned = clean_markup(text)
                if mime != "image/svg+xml" and not active_markup(
                        _markdown_html(cleaned) if mime == "text/markdown" else cleaned):
                    data[mime] = cleaned
                    continue
            elif mime != "application/json":
                self._found.append(f"cell {index}: {mime} output")
            else:
                continue
            del data[mime]
        output["metadata"] = _safe_metadata(output.get("metadata"))
        if not data:
            data["text/plain"] = "[output removed by the grader before review: it held active content]"
        return output
