# ASiT's web page and JSON API (`asit serve`) as a container image. The checkpoint is mounted at /model:
#
#   docker build -t asit-api .
#   docker run --rm -p 127.0.0.1:5000:5000 -v "$PWD/checkpoints/my-run:/model:ro" asit-api
#
# Build arguments (all optional):
#   BASE             a Debian-based image with Python 3.10+ and its venv module (default python:3.11-slim)
#   TORCH            the torch requirement (default: any torch 2.x, as pyproject.toml allows)
#   TORCH_PIP_ARGS   where pip finds torch: PyTorch's CPU-only index by default (PyPI's plain `torch` is a
#                    multi-GB CUDA build); e.g. "--index-url https://download.pytorch.org/whl/cu124" for CUDA
#   PIP_CERT         a CA bundle for pip, for networks that re-sign TLS
#   PIP_FIND_LINKS   a folder of wheels for pip, e.g. a local torch wheel
#                    (as the test does: `podman build -v HOST_PATH:PATH:ro`; pip reads both from the build steps'
#                    environment, and build arguments are not kept in the image)
# Runtime settings are environment variables read by `asit serve`, ASIT_<FLAG> for each flag (README "Deploy"):
#   ASIT_THREADS, ASIT_MAX_UPLOAD_MB, ASIT_MAX_SECONDS, ASIT_BATCHING, ASIT_PRECISION...; OMP_NUM_THREADS for torch.
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH="torch>=2.2"
ARG TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
ARG PIP_CERT=""
ARG PIP_FIND_LINKS=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/asit \
    PATH=/opt/asit/bin:$PATH

# A venv works the same on python:3.11-slim (Python in /usr/local) and on Debian's own python3 + python3-venv.
# torch first and on its own: from TORCH_PIP_ARGS' index, so the serving dependencies below can't pull a CUDA build.
RUN python3 -m venv "$VIRTUAL_ENV" \
 && pip install ${PIP_CERT:+--cert "$PIP_CERT"} $TORCH_PIP_ARGS "$TORCH"

# The serving dependencies only (no training, notebook, test or bench packages); they change rarely, so this layer
# stays cached while the package's code changes.
COPY deploy/requirements-serve.txt /tmp/requirements-serve.txt
RUN pip install ${PIP_CERT:+--cert "$PIP_CERT"} -r /tmp/requirements-serve.txt && rm /tmp/requirements-serve.txt

COPY pyproject.toml README.md /src/
COPY asit_helpers /src/asit_helpers
RUN pip install ${PIP_CERT:+--cert "$PIP_CERT"} --no-deps /src && rm -rf /src \
 && useradd --uid 10001 --home-dir /home/asit --create-home --shell /usr/sbin/nologin asit

USER asit
WORKDIR /home/asit
# 0.0.0.0 inside the container only: `asit serve` keeps binding 127.0.0.1 everywhere else, and `docker run -p`
# decides who outside can reach the port. The model is read from /model; nothing is fetched from the Hub.
ENV ASIT_HOST=0.0.0.0 \
    ASIT_PORT=5000 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/hf
# No VOLUME for /model: a derived image may bake a checkpoint in (`COPY my-run /model`), which VOLUME would drop.
EXPOSE 5000

HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ASIT_PORT', '5000'), timeout=4)"]

# exec form: `asit serve` is PID 1 and gets the SIGTERM of `docker stop` itself (it shuts waitress down cleanly).
STOPSIGNAL SIGTERM
ENTRYPOINT ["asit", "serve"]
CMD ["/model"]
