"""The Dockerfiles (k8s/images/) agree with the manifests that run their images and with pyproject's pins.

No container engine runs here, so the images cannot be built in CI; what can be checked offline is checked:
pinned bases (vLLM's tag equal to the serve-gpu pin), every pins.py extra exists, every COPY source exists and
passes the Dockerfile's .dockerignore allow-list, the image user and working directory are the ones the pods
assume, and every entry point a pod of that image calls is in that image.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import tomllib

from fixtures.k8s import IMAGE_USER, IMAGE_WORKDIR, OVERLAYS, ROOT, containers, pods

IMAGES = ROOT / "k8s" / "images"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def instructions(dockerfile: Path) -> list[tuple[str | None, str, str]]:
    """(stage, INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, buf = [], ""
    for raw in dockerfile.read_text().splitlines():
        if raw.lstrip().startswith("#") and not buf:
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        if raw.lstrip().startswith("#"):  # a comment line inside a continued RUN
            continue
        lines.append(buf + raw)
        buf = ""
    out, stage = [], None
    for line in (x.strip() for x in lines if x.strip()):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.search(r"\s+AS\s+(\S+)$", rest, re.I)
            stage = m.group(1) if m else "final"
        out.append((stage, word, rest.strip()))
    return out


def global_args(ins) -> dict[str, str]:
    return dict(a.split("=", 1) for s, w, a in ins if w == "ARG" and s is None and "=" in a)


def stage_instructions(ins, stage):
    return [(w, a) for s, w, a in ins if s == stage]


def dockerignore_allows(ignore_file: Path, path: str) -> bool:
    """Docker's .dockerignore semantics for an allow-list file: the last matching pattern wins."""
    allowed = True
    for pat in (p.strip() for p in ignore_file.read_text().splitlines()):
        if not pat or pat.startswith("#"):
            continue
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.replace("**/", "")) for p in prefixes):
            allowed = neg
    return allowed


def copies(ins, stage) -> list[tuple[str, str]]:
    out = []
    for w, a in stage_instructions(ins, stage):
        if w == "COPY" and "--from" not in a:
            *srcs, dest = a.split()
            out += [(s, dest) for s in srcs]
    return out


def image_files(ins, stage) -> set[str]:
    """Repository paths (files and folders) a stage copies into its WORKDIR."""
    return {src.rstrip("/") for src, _ in copies(ins, stage)}


def test_base_images_are_pinned_and_vllm_matches_the_serving_pin():
    train, serve = instructions(IMAGES / "train.Dockerfile"), instructions(IMAGES / "serve.Dockerfile")
    vllm_pin = next(r.split("==")[1] for r in PYPROJECT["optional-dependencies"]["serve-gpu"] if r.startswith("vllm=="))
    args = global_args(serve)
    assert args["VLLM_IMAGE"] == f"vllm/vllm-openai:v{vllm_pin}"
    assert [a for s, w, a in serve if w == "FROM"] == ["${VLLM_IMAGE} AS gpu", "${PYTHON_IMAGE} AS cpu"]
    documented_gpu_base = re.search(r"BASE_IMAGE=(\S+)", (IMAGES / "train.Dockerfile").read_text()).group(1)
    for image in (args["PYTHON_IMAGE"], global_args(train)["BASE_IMAGE"], documented_gpu_base):
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image


@pytest.mark.parametrize("dockerfile", ["train.Dockerfile", "serve.Dockerfile"])
def test_build_inputs_exist_and_pass_the_dockerignore(dockerfile):
    path = IMAGES / dockerfile
    ins = instructions(path)
    ignore = path.with_name(dockerfile + ".dockerignore")
    assert ignore.is_file(), "BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile"
    for stage in {s for s, _, _ in ins if s}:
        for src, _ in copies(ins, stage):
            assert (ROOT / src).exists(), f"{dockerfile} [{stage}]: COPY {src}: not in the repository"
            assert dockerignore_allows(ignore, src.rstrip("/")), f"{dockerfile}: {src} is excluded by {ignore.name}"
    extras = re.findall(r"python3 scripts/pins\.py ([\w-]+)", path.read_text())
    for arg in re.findall(r'python3 scripts/pins\.py "\$\{(\w+)\}"', path.read_text()):
        declared = dict(a.split("=", 1) for s, w, a in ins if w == "ARG" and "=" in a)
        extras.append(global_args(ins).get(arg) or declared[arg])
        extras += re.findall(rf"--build-arg {arg}=([\w-]+)", path.read_text())  # the documented GPU build
    for extra in extras:
        assert extra == "base" or extra in PYPROJECT["optional-dependencies"], \
            f"{dockerfile}: pins.py {extra}: no such extra in pyproject.toml"
    if dockerfile == "train.Dockerfile":  # the image has what `make setup` gives the main environment
        assert {"train", "quantize", "loadtest", "models", "onnx-cpu", "onnx-gpu",
                "model-nodeps"} <= set(extras), extras
    assert not dockerignore_allows(ignore, ".venv") and not dockerignore_allows(ignore, ".cache/models")
    assert not dockerignore_allows(ignore, "runs/tiny/teacher/model.safetensors")


def test_images_run_as_the_pods_expect_and_contain_their_entry_points(rendered):
    images = {"personagpt-train": (instructions(IMAGES / "train.Dockerfile"), ["final"]),
              "personagpt-serve": (instructions(IMAGES / "serve.Dockerfile"), ["cpu", "gpu"])}
    for ins, stages in images.values():
        for stage in stages:
            st = stage_instructions(ins, stage)
            assert [a for w, a in st if w == "USER"] == [str(IMAGE_USER)], stage
            assert [a for w, a in st if w == "WORKDIR"] == [IMAGE_WORKDIR], stage
    used: dict[str, set[str]] = {name: set() for name in images}
    for overlay in OVERLAYS:
        for _res, _, _, pod in pods(rendered[overlay]):
            for c in containers(pod):
                name = c["image"].split(":")[0]
                cmd = c["command"]
                used[name].add(cmd[1] if cmd[0] in ("python3", "python") else cmd[0])
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if "exec" in c.get(probe, {}):
                        used[name].add(c[probe]["exec"]["command"][0])
    assert used["personagpt-serve"] == {"serve/run.py", "k8s/wait_for_artifact.py", "python3"}
    for name, entries in used.items():
        ins, stages = images[name]
        for stage in stages:
            files = image_files(ins, stage)
            for entry in entries:
                if entry == "python3":
                    continue
                if "/" in entry:  # a script of this repository, run from WORKDIR
                    assert any(entry == f or entry.startswith(f + "/") for f in files), f"{name}[{stage}]: {entry}"
                else:  # a console script: installed by pip into the image
                    text = " ".join(a for w, a in stage_instructions(ins, stage) if w == "RUN")
                    assert "pip install --no-deps ." in text, f"{name}: {entry} needs the project installed"
                    assert entry in ("personagpt", "deepspeed"), entry
                    if entry == "deepspeed":
                        assert "pins.py train" in text
    # serve/run.py finds vLLM through PERSONAGPT_VLLM_PYTHON; each stage checks at build time that it imports
    serve_ins = images["personagpt-serve"][0]
    for stage in ("cpu", "gpu"):
        env = " ".join(a for w, a in stage_instructions(serve_ins, stage) if w == "ENV")
        py = re.search(r"PERSONAGPT_VLLM_PYTHON=(\S+)", env).group(1)
        assert py.startswith("/"), py
        runs = " ".join(a for w, a in stage_instructions(serve_ins, stage) if w == "RUN")
        assert '"${PERSONAGPT_VLLM_PYTHON}" -c "import vllm' in runs
    cpu_runs = " ".join(a for w, a in stage_instructions(serve_ins, "cpu") if w == "RUN")
    assert "pins.py serve-cpu" in cpu_runs and "pip uninstall -y torchvision torchaudio torchcodec triton" in cpu_runs


def test_overlay_image_tags_match_the_documented_builds(rendered):
    docs_text = (IMAGES / "train.Dockerfile").read_text() + (IMAGES / "serve.Dockerfile").read_text()
    for overlay in OVERLAYS:
        tags = {c["image"] for _, _, _, pod in pods(rendered[overlay]) for c in containers(pod)}
        assert tags == {f"personagpt-train:0.1.0-{overlay}", f"personagpt-serve:0.1.0-{overlay}"}
        for tag in tags:
            assert f"-t {tag}" in docs_text, f"no documented build produces {tag}"
