# Serves the PURE dashboard on run stores mounted read-only at /runs, with the model weights the uploads need
# (demo checkpoint, torch hub, Hugging Face hub caches) mounted read-only at /models:
#   docker build -t pure-explorer .
#   docker run -p 8501:8501 -v "$PWD/runs:/runs:ro" -v "$HOME/.cache:/models:ro" -v "$PWD/notes:/notes" \
#     pure-explorer
# The team's notes go to the SQLite file /notes/annotations.sqlite (a writable volume), or to the database
# that secrets.toml's [annotations] url names.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PURE_RUNS_DIR=/runs \
    PURE_ANNOTATIONS_URL=sqlite:////notes/annotations.sqlite \
    PURE_CACHE_DIR=/models/pure-explorer \
    TORCH_HOME=/models/torch \
    HF_HOME=/models/huggingface \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false

WORKDIR /opt/pure-explorer

# The pinned dependencies first (a layer that survives source changes): CPU wheels of the pinned torch pair
# keep the image small; the rest comes from PyPI as pinned (requirements.txt less its `-e .` line).
COPY requirements.txt .
RUN grep -v '^-e' requirements.txt > /tmp/requirements.txt \
    && pip install --index-url https://download.pytorch.org/whl/cpu torch==2.14.1 torchvision==0.29.1 \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the project, installed (packages, the `pure-explorer` command, the plugin entries).
COPY pyproject.toml .
COPY pure_core/ pure_core/
COPY synthetic/ synthetic/
COPY sample_photos/ sample_photos/
COPY precompute/ precompute/
COPY store/ store/
COPY annotations_db/ annotations_db/
COPY app/ app/
COPY pure_explorer/ pure_explorer/
RUN pip install --no-deps . && rm -rf build ./*.egg-info
# Streamlit's settings travel inside app/ (app/.streamlit/config.toml, read beside the main script);
# secrets.toml is mounted at run time into the working directory's .streamlit/, never copied.

RUN useradd --create-home --uid 10001 explorer && mkdir /notes && chown 10001 /notes
USER 10001

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['STREAMLIT_SERVER_PORT'] + '/_stcore/health', timeout=4)"]

CMD ["pure-explorer", "app"]
