"""Student construction: depth/width pruning initialised from the teacher; errors name distill.student.*."""

import pytest
import torch

from distill.student import build_student, evenly_spaced
from personagpt.config.distill import StudentConfig
from personagpt.errors import ConfigError
from personagpt.models import load_model


@pytest.fixture(scope="module")
def teacher(tiny_model_artifact):
    return load_model(tiny_model_artifact)[0]


def test_evenly_spaced():
    assert evenly_spaced(30, 10) == [0, 3, 6, 10, 13, 16, 19, 23, 26, 29]
    assert evenly_spaced(4, 2) == [0, 3] and evenly_spaced(4, 1) == [3] and evenly_spaced(4, 4) == [0, 1, 2, 3]


def test_depth_pruning_copies_the_kept_layers(teacher):
    student, info = build_student(teacher, StudentConfig(keep_layers=[1, 3]))
    assert student.config.num_hidden_layers == 2 and info["keep_layers"] == [1, 3]
    assert info["random"] == 0 and info["sliced"] == 0
    t, s = teacher.state_dict(), student.state_dict()
    assert torch.equal(s["model.layers.0.self_attn.q_proj.weight"], t["model.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(s["model.layers.1.mlp.down_proj.weight"], t["model.layers.3.mlp.down_proj.weight"])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"])
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    ids = torch.tensor([[1, 5, 9, 12]])
    assert student(input_ids=ids).logits.shape == teacher(input_ids=ids).logits.shape


def test_width_pruning_slices_and_keeps_head_size(teacher):
    cfg = StudentConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=96, num_attention_heads=1,
                        num_key_value_heads=1, width_selection="first")
    student, info = build_student(teacher, cfg)
    assert info["width_selection"] == {"method": "first"}
    head_dim = teacher.config.hidden_size // teacher.config.num_attention_heads
    assert student.config.head_dim == head_dim and student.config.hidden_size == 32
    assert info["sliced"] > 0 and info["random"] == 0
    t = teacher.state_dict()["model.layers.3.mlp.up_proj.weight"]
    assert torch.equal(student.state_dict()["model.layers.1.mlp.up_proj.weight"], t[:96, :32])
    assert student(input_ids=torch.tensor([[1, 2, 3]])).logits.shape[-1] == teacher.config.vocab_size


def test_scratch_init_differs_from_teacher(teacher):
    student, info = build_student(teacher, StudentConfig(keep_layers=[0, 3], init="scratch"))
    assert info["copied"] == 0
    assert not torch.equal(student.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                           teacher.state_dict()["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.parametrize("cfg, match", [
    (StudentConfig(keep_layers=[0, 7]), r"distill.student.keep_layers: \[7\] out of range"),
    (StudentConfig(keep_layers=[1, 1]), "duplicate"),
    (StudentConfig(num_hidden_layers=9), "distill.student.num_hidden_layers"),
    (StudentConfig(hidden_size=128), "distill.student.hidden_size: 128 is larger"),
    (StudentConfig(num_attention_heads=2, num_key_value_heads=3), "num_key_value_heads: 3 is larger"),
])
def test_bad_student_shapes(teacher, cfg, match):
    with pytest.raises(ConfigError, match=match):
        build_student(teacher, cfg)


def _identity_layers(model, layers):
    """Layers that add nothing to the residual stream (zero output projections): hidden in == hidden out."""
    for i in layers:
        layer = model.model.layers[i]
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    return model


def test_angular_selection_drops_the_block_that_changes_nothing():
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.layer_selection import angular_keep_layers, block_angular_distances

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = _identity_layers(LlamaForCausalLM(cfg), [2, 3])
    ids = torch.randint(0, 128, (3, 10))
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0  # padding does not count
    dists = block_angular_distances(model, [(ids, mask)], 2)
    assert len(dists) == 4  # starts 0..3; a block never swallows the last layer
    assert dists[2] == pytest.approx(0.0, abs=1e-6) and min(dists[:2] + dists[3:]) > 0.01
    keep, info = angular_keep_layers(model, [(ids, mask)], 4)
    assert keep == [0, 1, 4, 5] and info["dropped"] == [2, 3]
    # the last layer is kept even when it is the one that changes nothing
    model = _identity_layers(LlamaForCausalLM(cfg), [5])
    keep, _ = angular_keep_layers(model, [(ids, mask)], 5)
    assert 5 in keep and len(keep) == 5
    with pytest.raises(ValueError):
        block_angular_distances(model, [(ids, mask)], 6)


def test_influence_selection_drops_the_layers_that_change_nothing_not_necessarily_contiguous():
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.layer_selection import block_influences, influence_keep_layers

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=64)
    model = _identity_layers(LlamaForCausalLM(cfg), [1, 3])
    ids = torch.randint(0, 128, (3, 10))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    bi = block_influences(model, [(ids, mask)])
    assert len(bi) == 5  # every layer but the last
    assert bi[1] == pytest.approx(0.0, abs=1e-9) and bi[3] == pytest.approx(0.0, abs=1e-9)
    assert min(bi[0], bi[2], bi[4]) > 1e-4
    keep, info = influence_keep_layers(model, [(ids, mask)], 4)
    assert keep == [0, 2, 4, 5] and info["method"] == "influence" and info["dropped"] == [1, 3]
    # the last layer is kept even when it changes nothing
    model = _identity_layers(LlamaForCausalLM(cfg), [5])
    keep, _ = influence_keep_layers(model, [(ids, mask)], 3)
    assert 5 in keep and len(keep) == 3
    assert influence_keep_layers(model, [(ids, mask)], 6)[0] == list(range(6))
