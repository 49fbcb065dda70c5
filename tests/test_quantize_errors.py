"""Bad input to quantize/run.py: a clear message naming the key or path, exit code 2, nothing written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fixtures.artifacts import TINY
from fixtures.quantize import quantize_cli
from quantize.run import main, scoped_overrides


def _run(capsys, *args: str) -> tuple[int, str]:
    code = main(["--config", str(TINY), *args])
    return code, capsys.readouterr().err


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]  # no staging leftovers


def test_scoped_overrides():
    assert scoped_overrides(["method=gptq", "bits=8", "onnx.quantize=false", "model=/m", "model.hidden_size=32",
                             "data.max_length=64", "quantize.sym=false", "name=x"]) == \
        ["quantize.method=gptq", "quantize.bits=8", "quantize.onnx.quantize=false", "quantize.model=/m",
         "model.hidden_size=32", "data.max_length=64", "quantize.sym=false", "name=x"]


def test_unknown_method_cli_exit_2(quant_teacher, tiny_dataset, tmp_path):
    """The real command line: exit status 2 and a one-line error naming the key."""
    out = tmp_path / "q"
    proc = quantize_cli("method=awq", f"model={quant_teacher}", f"dataset={tiny_dataset}", f"output_dir={out}",
                        check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: " in proc.stderr and "quantize.method" in proc.stderr and "'gptq', 'int8' or 'onnx'" in proc.stderr
    assert "Traceback" not in proc.stderr
    _assert_nothing_written(out)


@pytest.fixture()
def no_manifest(quant_teacher, tmp_path) -> Path:
    d = tmp_path / "no-manifest"
    shutil.copytree(quant_teacher, d)
    (d / "manifest.json").unlink()
    return d


@pytest.fixture()
def no_weights(quant_teacher, tmp_path) -> Path:
    d = tmp_path / "no-weights"
    shutil.copytree(quant_teacher, d)
    (d / "model.safetensors").unlink()
    return d


@pytest.mark.parametrize("case, expect", [
    ("method_missing", ["quantize.method: required"]),
    ("no_folder", ["quantize.model", "does not exist"]),
    ("no_manifest", ["no-manifest", "not an artifact (no manifest.json)"]),
    ("no_weights", ["quantize.model", "no-weights", "has no weights"]),
    ("group_size", ["quantize.group_size: 128 does not divide the hidden_size 64, intermediate_size 192",
                    "valid here: 32, 64"]),
    ("calibration_floor", ["quantize.n_calibration", "greater than or equal to 16"]),
    ("calibration_too_few", ["quantize.n_calibration: 5000 calibration samples requested", "train.jsonl has only"]),
    ("dataset_is_model", ["artifact kind is 'model', expected dataset"]),
])
def test_bad_input_exit_2_nothing_written(case, expect, quant_teacher, tiny_dataset, tmp_path, capsys, request):
    out = tmp_path / "out"
    model, dataset = quant_teacher, tiny_dataset
    extra = ["method=gptq"]
    if case == "method_missing":
        extra = []
    elif case == "no_folder":
        model = tmp_path / "missing"
    elif case in ("no_manifest", "no_weights"):
        model = request.getfixturevalue(case)
    elif case == "group_size":
        extra.append("group_size=128")
    elif case == "calibration_floor":
        extra.append("n_calibration=4")
    elif case == "calibration_too_few":
        extra = ["method=int8", "n_calibration=5000"]
    elif case == "dataset_is_model":
        dataset = quant_teacher
    code, err = _run(capsys, *extra, f"model={model}", f"dataset={dataset}", f"output_dir={out}")
    assert code == 2, err
    assert err.startswith("error: "), err
    for e in expect:
        assert e in err, err
    _assert_nothing_written(out)


def test_already_quantized_input_refused(gptq_artifact, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "twice"
    code, err = _run(capsys, "method=int8", f"model={gptq_artifact}", f"dataset={tiny_dataset}", f"output_dir={out}")
    assert code == 2 and "is already quantized (gptq)" in err, err
    _assert_nothing_written(out)


def test_output_may_not_overwrite_input(quant_teacher, tiny_dataset, capsys):
    code, err = _run(capsys, "method=onnx", f"model={quant_teacher}", f"dataset={tiny_dataset}",
                     f"output_dir={quant_teacher}")
    assert code == 2 and "quantize.output_dir" in err and "would overwrite quantize.model" in err, err
    assert (quant_teacher / "model.safetensors").is_file()
