"""Untrusted text (query values, file names, store values, typed e-mails) made literal for the pages.

Streamlit renders labels, captions, notices and tooltips as markdown, and some elements as HTML; a value put
into them as it is can close a code span, add a live link, load an outside image or inject HTML. Every such
value goes through `code` (markdown) or `html_text` (HTML the app builds) first. Backslash escapes are not
enough: Streamlit's markdown turns a URL, `www.` name or e-mail address in plain text into a live link, but
never inside a code span. Plain Python, so it is tested directly.
"""

from __future__ import annotations

import html
import re

_LINE_BREAKS = re.compile(r"[\r\n\t\f\v\u0085\u2028\u2029]+")
_BACKTICK_RUNS = re.compile(r"`+")


def code(value: object, max_chars: int | None = None) -> str:
    """``value`` as a markdown code span that shows it character for character (no link, image, HTML or
    formatting): fenced by one backtick more than its longest run of backticks, padded with spaces (which
    markdown strips) when it starts or ends with a backtick, line breaks made spaces so that the span cannot
    end a paragraph; cut to ``max_chars`` first when given."""
    text = _LINE_BREAKS.sub(" ", str(value))
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars] + "…"
    fence = "`" * (1 + max((len(run) for run in _BACKTICK_RUNS.findall(text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def html_text(value: object) -> str:
    """``value`` escaped for HTML text and quoted attributes, line breaks made spaces (in `st.markdown` with
    HTML, a blank line would end the HTML block and let the rest be read as markdown)."""
    return html.escape(_LINE_BREAKS.sub(" ", str(value)), quote=True)
