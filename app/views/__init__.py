"""One module per page; each renders only when Streamlit runs it as a page script.

Not named `pages/`: Streamlit treats a `pages/` folder beside the main script as a v1 multipage app and, in a
fresh server process, runs a deep-linked page file without main.py (no navigation, no access check)."""
