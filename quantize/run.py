"""Quantize a model artifact: GPTQ, int8 W8A8 for vLLM, or ONNX Runtime int8.

    python quantize/run.py --config configs/tiny.yaml method=gptq [key=value ...]

Keys of the ``quantize:`` section may be given bare (``method=int8 bits=8 group_size=64 onnx.quantize=false``) or
in full (``quantize.method=int8``); other sections as usual (``data.max_length=256``). Reads ``quantize.model``
(default runs/NAME/student) and ``quantize.dataset``; writes ``quantize.output_dir`` (default
runs/NAME/quantized-METHOD): the quantized model with tokenizer, chat template, generation config and a manifest
holding perplexity, weight bytes and decode tokens/s before and after. Bad input exits with code 2 and writes
nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def scoped_overrides(overrides: list[str]) -> list[str]:
    """``method=gptq`` -> ``quantize.method=gptq``; ``onnx.quantize=false`` -> ``quantize.onnx.quantize=false``.
    A dotted key whose first part is a top-level section (``model.hidden_size``) is left alone."""
    from personagpt.config.quantize import QuantizeConfig
    from personagpt.config.root import Config

    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        head, dot, _ = key.strip().partition(".")
        if sep and head in QuantizeConfig.model_fields and (not dot or head not in Config.model_fields):
            item = f"quantize.{key.strip()}={value}"
        out.append(item)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="quantize/run.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--config", "-c", type=Path, help="YAML config (configs/tiny.yaml, configs/smollm2-persona.yaml)")
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. method=gptq bits=4 group_size=64")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from personagpt.cli import run_cli

    def _run(a) -> int:
        from personagpt.config import load_config
        from quantize.pipeline import run

        cfg = load_config(a.config, scoped_overrides(a.overrides))
        run(cfg)
        return 0

    return run_cli(_run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
