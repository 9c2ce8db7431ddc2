"""``tracelet ui``: a read-only web dashboard over the local store, live while training
writes to it.

Nothing here is imported by ``import tracelet``; the web stack (Starlette, uvicorn, and
plotly for its bundled plotly.js: ``pip install "tracelet-core[ui]"``) is imported only
when the dashboard starts. See docs/ui.md.
"""
