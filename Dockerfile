# One image for every driftstream process of docker-compose.yml (BentoML services, stream
# and batch workers, alerts receiver, topic set-up); the compose command picks the process.
FROM python:3.11-slim-bookworm

# torch/torchvision CPU wheels: the default PyPI wheels bundle CUDA libraries (several GB).
# The constraints pin torch==X, which the X+cpu builds satisfy.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DRIFTSTREAM_HOST=0.0.0.0 \
    DRIFTSTREAM_STATE_DIR=/var/lib/driftstream

# OpenCV (through ultralytics) loads libGL and glib at import time
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, from the pins alone, so code changes reuse this layer.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p driftstream producers stream_apps batch serving \
    && for p in driftstream producers stream_apps batch serving; do touch "$p/__init__.py"; done \
    && pip install --extra-index-url "$TORCH_INDEX_URL" -c constraints.txt . \
    && pip uninstall -y driftstream \
    && rm -rf driftstream producers stream_apps batch serving build

COPY . .
RUN pip install --no-deps -c constraints.txt . && rm -rf build

RUN useradd --create-home --uid 10001 driftstream \
    && mkdir -p /var/lib/driftstream \
    && chown driftstream:driftstream /var/lib/driftstream
USER driftstream

VOLUME ["/var/lib/driftstream"]
EXPOSE 13000 13001 15001 16066 16067 16070
CMD ["driftstream", "--help"]
