"""Outside values made literal: `code` gives a markdown code span that shows any value character for
character, `html_text` escaped HTML text. The pages' use of them: tests/test_app_pages.py (AppTest) and
tests/test_hosting_browser.py (what chromium renders)."""

import re

import pytest

from app.safe_text import code, html_text

CRAFTED = [
    "plain",
    "x`[Session expired - log in](http://evil.org)`",
    "![i](http://evil.org/i.png)",
    "<script>alert(1)</script><img src=http://evil.org/i.png>",
    "`leading and trailing`",
    "``double`` and ```triple",
    "two\n\nparagraphs\r\n# heading",
    "see http://evil.org, www.evil.org, eve@evil.org",
]


def _code_span_content(markdown: str) -> str:
    """CommonMark's reading of a markdown text that is one code span: the backtick fence, then the content up
    to the same fence, one space stripped from each side when both sides have one."""
    match = re.fullmatch(r"(`+)(.*?)(?<!`)\1", markdown, flags=re.DOTALL)
    assert match is not None, f"not a single code span: {markdown!r}"
    content = match.group(2)
    if content.startswith(" ") and content.endswith(" ") and content.strip(" "):
        content = content[1:-1]
    return content


@pytest.mark.parametrize("value", CRAFTED)
def test_code_is_one_code_span_that_shows_the_value_as_it_is(value):
    span = code(value)
    assert _code_span_content(span) == re.sub(r"[\r\n]+", " ", value)
    assert "\n" not in span and "\r" not in span


def test_code_cuts_long_values():
    assert _code_span_content(code("x" * 100, max_chars=10)) == "x" * 10 + "…"


def test_html_text_escapes_markup_quotes_and_line_breaks():
    assert html_text("<b a='1'>\"&\n\n</b>") == "&lt;b a=&#x27;1&#x27;&gt;&quot;&amp; &lt;/b&gt;"
