"""The Streamlit dashboard: `streamlit run app/main.py` (pages in app/views/, store access in app/data.py)."""
