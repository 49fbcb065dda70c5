"""bf16 engines: a model cast with ``cast_weights`` computes exactly what the same weights loaded with
``from_pretrained(dtype=bfloat16)`` compute, because both keep the rotary frequencies fp32. ``model.to(bfloat16)``
rounds them too; that is what made the consolidation check of a bf16 teacher fail on an H200 (max |logit diff| 1.58
on SmolLM2-135M), so the check itself now casts with ``cast_weights``."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from personagpt.training.model_setup import cast_weights

CONFIG = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(LlamaConfig(**CONFIG), dtype=torch.float32)
    folder = tmp_path_factory.mktemp("llama")
    model.save_pretrained(folder)
    return folder


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits.float()


def test_cast_weights_matches_a_bfloat16_load_exactly(saved_model):
    loaded = AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.bfloat16)
    cast = cast_weights(AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.float32), torch.bfloat16)

    assert all(p.dtype == torch.bfloat16 for p in cast.parameters())
    buffers = dict(cast.named_buffers())
    assert buffers["model.rotary_emb.inv_freq"].dtype == torch.float32
    assert cast.lm_head.weight is cast.model.embed_tokens.weight  # tied weights stay one tensor

    ids = torch.randint(0, CONFIG["vocab_size"], (2, 400), generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(cast, ids), _logits(loaded, ids))


def test_to_bfloat16_rounds_the_rotary_frequencies_and_changes_the_logits(saved_model):
    """The hazard the helper avoids: ``.to(bfloat16)`` also casts ``inv_freq``, and late positions drift."""
    loaded = AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.bfloat16)
    moved = AutoModelForCausalLM.from_pretrained(saved_model, dtype=torch.float32).to(torch.bfloat16)
    assert dict(moved.named_buffers())["model.rotary_emb.inv_freq"].dtype == torch.bfloat16

    ids = torch.randint(0, CONFIG["vocab_size"], (2, 400), generator=torch.Generator().manual_seed(0))
    a, b = _logits(moved, ids), _logits(loaded, ids)
    early, late = (a - b)[:, :8].abs().max(), (a - b)[:, -64:].abs().max()
    assert late > 0 and late > early, (early, late)
