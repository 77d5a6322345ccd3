"""Entry point: `streamlit run app/main.py [-- --runs-dir DIR]`; declares the pages, nothing else."""

from __future__ import annotations

import streamlit as st

from app.auth import is_admitted, require_access
from app.ui import favicon_uri

st.set_page_config(page_title="PURE neuron explorer", page_icon=favicon_uri(), layout="wide")

pages = {
    "overview": st.Page(
        "views/overview.py",
        title="Overview",
        icon=":material/leaderboard:",
        url_path="overview",
        default=True,
    ),
    "neuron": st.Page(
        "views/neuron.py", title="Neuron explorer", icon=":material/neurology:", url_path="neuron"
    ),
    "upload": st.Page(
        "views/upload.py", title="Upload an image", icon=":material/upload:", url_path="upload"
    ),
    "activity": st.Page(
        "views/activity.py", title="Team notes", icon=":material/forum:", url_path="activity"
    ),
}
# Resolve the requested page before the login (navigation hidden until admitted), so that a deep link
# opened on a protected instance still leads to its page, neuron and k after logging in.
page = st.navigation(list(pages.values()), position="sidebar" if is_admitted() else "hidden")
require_access()
requested = st.query_params.get("page")
if requested is not None:  # `?page=neuron&neuron=12&k=3` also works on the app's root URL
    params = {name: st.query_params.get(name) for name in st.query_params if name != "page"}
    if requested in pages and pages[requested].url_path != page.url_path:
        st.switch_page(pages[requested], query_params=params)
    del st.query_params["page"]
page.run()
