"""An mkdocs hook (``hooks:`` in mkdocs.yml): Tracelet's reST docstrings read as Sphinx
would show them. It is not a page of the site.

- Sphinx roles (``:class:`Batch```, ``:func:`~a.b.name```), which mkdocstrings renders as
  the role's name followed by code, keep the code only (``~``: the last dotted part).
- A paragraph ending ``::`` before a literal block ends with one colon.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>")


def on_page_content(html: str, **_: Any) -> str:
    """Each rendered role becomes its code; a paragraph's closing ``::`` one colon."""
    html = ROLE.sub(lambda m: f"<code>{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}</code>", html)
    return html.replace("::</p>", ":</p>")
