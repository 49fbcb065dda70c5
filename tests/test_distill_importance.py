"""Width pruning by importance (distill/importance.py): on a model whose dead channels are zeroed, the student
keeps the live ones; ``first`` keeps the leading channels (the plain slicing)."""

import pytest
import torch

from distill.importance import choose_heads, first_channels, importance_channels
from distill.objective import DistillObjective
from distill.student import build_student, student_config
from personagpt.config.distill import DistillConfig, StudentConfig
from personagpt.errors import ConfigError

H, INTER, LAYERS = 32, 64, 3
DEAD_HIDDEN = [1, 4, 5, 9, 17, 20, 30, 31]                    # 24 live hidden channels
DEAD_MLP = {0: list(range(0, 64, 2)), 1: list(range(32, 64)), 2: list(range(16, 48))}  # 32 live neurons per layer
DEAD_GROUP = {1: 0, 2: 1}                                      # layer -> the KV group whose values are zero


def _model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=H, intermediate_size=INTER, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _kill(model, hidden=True, mlp=True, groups=True):
    hd = H // 4
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            if mlp:
                layer.mlp.gate_proj.weight[DEAD_MLP[i]] = 0  # silu(0) * up = 0: a neuron that never fires
            if groups and i in DEAD_GROUP:
                g = DEAD_GROUP[i]
                layer.self_attn.v_proj.weight[g * hd:(g + 1) * hd] = 0  # both query heads of the group output 0
            if hidden:
                layer.input_layernorm.weight[DEAD_HIDDEN] = 0
                layer.post_attention_layernorm.weight[DEAD_HIDDEN] = 0
        if hidden:
            model.model.norm.weight[DEAD_HIDDEN] = 0
    return model


def _batches():
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (4, 12))
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0
    return [(ids[:2], mask[:2]), (ids[2:], mask[2:])]


def live(n, dead):
    return [i for i in range(n) if i not in dead]


def test_importance_keeps_the_live_channels():
    model = _kill(_model())
    scfg = StudentConfig(keep_layers=[0, 1, 2], hidden_size=24, intermediate_size=32, num_attention_heads=2,
                         num_key_value_heads=1)
    s_cfg = student_config(model.config, scfg, [0, 1, 2])
    choice, info = importance_channels(model, _batches(), [0, 1, 2], s_cfg)
    assert choice.hidden == live(H, DEAD_HIDDEN)
    assert choice.mlp == [live(INTER, DEAD_MLP[i]) for i in range(LAYERS)]
    assert choice.kv_heads[1] == [1] and choice.heads[1] == [2, 3]  # group 0 is dead in layer 1
    assert choice.kv_heads[2] == [0] and choice.heads[2] == [0, 1]
    assert info["method"] == "importance" and info["importance_kept"]["hidden"] == pytest.approx(1.0)
    assert info["importance_kept"]["mlp"] == pytest.approx(1.0)
    student, binfo = build_student(model, scfg, layers=[0, 1, 2], width=choice)
    assert binfo["width_selection"] == {"method": "importance"} and binfo["random"] == 0
    t, s = model.state_dict(), student.state_dict()
    hid, mlp1 = torch.tensor(choice.hidden), torch.tensor(choice.mlp[1])
    layer = "model.layers.1."
    assert torch.equal(s[layer + "mlp.up_proj.weight"], t[layer + "mlp.up_proj.weight"][mlp1][:, hid])
    assert torch.equal(s[layer + "mlp.down_proj.weight"], t[layer + "mlp.down_proj.weight"][hid][:, mlp1])
    assert torch.equal(s[layer + "self_attn.k_proj.weight"], t[layer + "self_attn.k_proj.weight"][8:16][:, hid])
    assert torch.equal(s[layer + "self_attn.o_proj.weight"], t[layer + "self_attn.o_proj.weight"][hid][:, 16:32])
    assert torch.equal(s["model.embed_tokens.weight"], t["model.embed_tokens.weight"][:, hid])
    assert torch.equal(s["model.norm.weight"], t["model.norm.weight"][hid])


def test_pruning_only_dead_neurons_leaves_the_model_unchanged_first_does_not():
    model = _kill(_model(), hidden=False, groups=False)
    scfg = StudentConfig(keep_layers=[0, 1, 2], intermediate_size=32)
    s_cfg = student_config(model.config, scfg, [0, 1, 2])
    choice, _ = importance_channels(model, _batches(), [0, 1, 2], s_cfg)
    ids = _batches()[0][0]
    with torch.no_grad():
        want = model(input_ids=ids).logits
        by_importance = build_student(model, scfg, layers=[0, 1, 2], width=choice)[0](input_ids=ids).logits
        first = build_student(model, scfg.model_copy(update={"width_selection": "first"}), layers=[0, 1, 2])[0]
        by_first = first(input_ids=ids).logits
    assert torch.allclose(by_importance, want, atol=1e-5)
    assert (by_first - want).abs().max() > 1e-2


def test_first_keeps_the_leading_channels():
    model = _kill(_model())
    scfg = StudentConfig(keep_layers=[0, 2], hidden_size=24, intermediate_size=32, num_attention_heads=2,
                         num_key_value_heads=1, width_selection="first")
    s_cfg = student_config(model.config, scfg, [0, 2])
    a, info = build_student(model, scfg, layers=[0, 2])
    b, _ = build_student(model, scfg, layers=[0, 2], width=first_channels(model.config, s_cfg))
    assert info["width_selection"] == {"method": "first"}
    t = model.state_dict()
    for name, p in a.state_dict().items():
        assert torch.equal(p, b.state_dict()[name])
    assert torch.equal(a.state_dict()["model.layers.1.mlp.gate_proj.weight"],
                       t["model.layers.2.mlp.gate_proj.weight"][:32, :24])
    assert torch.equal(a.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                       t["model.layers.0.self_attn.q_proj.weight"][:16, :24])


def test_head_choice_keeps_whole_groups_and_the_top_heads_in_each():
    scores = torch.tensor([1.0, 5.0, 0.5, 0.1, 0.2, 0.3, 4.0, 0.0, 4.5])  # 9 heads, 3 KV groups of 3
    assert choose_heads(scores, 3, 6, 3) == ([0, 1, 4, 5, 6, 8], [0, 1, 2])  # 2 best heads of every group
    assert choose_heads(scores, 3, 4, 2) == ([0, 1, 6, 8], [0, 2])  # groups 0 (6.5) and 2 (8.5) kept
    assert choose_heads(scores, 3, 3, 1) == ([6, 7, 8], [2])


def test_more_query_heads_per_kv_head_than_the_teacher_is_refused():
    model = _model()  # 4 heads on 2 KV heads: 2 per group
    with pytest.raises(ConfigError, match="width_selection importance keeps whole teacher KV groups"):
        student_config(model.config, StudentConfig(num_attention_heads=3, num_key_value_heads=1), [0, 1])
    student_config(model.config, StudentConfig(num_attention_heads=3, num_key_value_heads=1,
                                               width_selection="first"), [0, 1])


def test_hidden_matching_compares_the_kept_teacher_channels():
    obj = DistillObjective(DistillConfig(), None, [0], 0, [2], 0, hidden_channels=[1, 3])
    t_h = torch.arange(8.0).view(1, 2, 4)
    assert obj._teacher_channels(t_h, 2).tolist() == [[[1.0, 3.0], [5.0, 7.0]]]
    assert DistillObjective(DistillConfig(), None, [0], 0, [2], 0)._teacher_channels(t_h, 2).tolist() == \
        [[[0.0, 1.0], [4.0, 5.0]]]
