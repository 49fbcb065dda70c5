"""Linear bridges (distill/bridges.py): the refit down-projection is the weighted least-squares solution for the
teacher's hidden state after the gap, ridge pulls it back to the teacher's, and it brings the student's residual
stream closer to the teacher's where the dropped layers were."""

import pytest
import torch

from distill.bridges import check_bridgeable, fit_bridges, gaps
from distill.student import build_student
from personagpt.config.distill import StudentConfig
from personagpt.errors import ConfigError

KEEP = [0, 3, 5]  # two gaps: teacher layers 1-2 after student layer 0, layer 4 after student layer 1


def _teacher():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=6,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def _batches():
    torch.manual_seed(1)
    ids = torch.randint(0, 64, (8, 24))
    mask = torch.ones_like(ids)
    mask[3, 15:] = 0
    mask[6, 10:] = 0
    return [(ids[i:i + 4], mask[i:i + 4]) for i in (0, 4)]


def _student(teacher):
    return build_student(teacher, StudentConfig(keep_layers=KEEP))[0].eval()


@torch.no_grad()
def _weighted_residual_error(teacher, student) -> list[float]:
    """Per gap: Σ_t ‖student hidden − teacher hidden‖² / ‖teacher hidden‖² entering the layer after the gap."""
    errs = [0.0, 0.0]
    for ids, mask in _batches():
        t = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        s = student(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        m = mask.bool()
        for g, (s_in, t_in) in enumerate([(1, 3), (2, 5)]):
            th, sh = t[t_in][m], s[s_in][m]
            errs[g] += float((((sh - th) ** 2).sum(-1) / (th ** 2).sum(-1)).sum())
    return errs


def test_gaps_are_the_kept_layers_before_dropped_ones():
    assert gaps(KEEP) == [0, 1] and gaps([0, 1, 2]) == [] and gaps([2, 3, 7, 9]) == [1, 2]


def test_bridges_bring_the_residual_stream_to_the_teachers():
    teacher = _teacher()
    student = _student(teacher)
    before = _weighted_residual_error(teacher, student)
    untouched = {k: v.clone() for k, v in student.state_dict().items()}
    info = fit_bridges(teacher, student, KEEP, _batches(), ridge=1e-3)
    after = _weighted_residual_error(teacher, student)
    assert [g["teacher_layers_replaced"] for g in info["fits"]] == [[1, 2], [4]]
    assert info["tokens"] == 8 * 24 - 9 - 14  # padding never counts
    for g in info["fits"]:
        assert g["fit_error_after"] < g["fit_error_before"]
    assert after[0] < 0.8 * before[0] and after[1] < before[1], (before, after)
    changed = {k for k, v in student.state_dict().items() if not torch.equal(v, untouched[k])}
    assert changed == {"model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"}


def test_the_first_bridge_is_the_weighted_least_squares_solution():
    teacher = _teacher()
    student = _student(teacher)
    # the data of the first gap, collected independently: the input of student layer 0's down_proj, and the
    # residual after its attention = its output minus its down_proj's output
    acts, resids, targets = [], [], []
    hook = student.model.layers[0].mlp.down_proj.register_forward_hook(
        lambda m, a, o: acts.append((a[0], o)))
    with torch.no_grad():
        for ids, mask in _batches():
            s = student(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            t = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
            a, o = acts[-1]
            m = mask.bool()
            acts[-1] = a[m]
            resids.append((s[1] - o)[m])
            targets.append(t[3][m])
    hook.remove()
    A, resid, target = (torch.cat(x).double() for x in (acts, resids, targets))
    w = 1 / target.norm(dim=-1, keepdim=True)
    expected = torch.linalg.lstsq(A * w, (target - resid) * w).solution.T  # out x in
    fit_bridges(teacher, student, KEEP, _batches(), ridge=0.0)
    got = student.model.layers[0].mlp.down_proj.weight.double()
    assert torch.allclose(got, expected, atol=1e-3, rtol=1e-3), (got - expected).abs().max()


def test_a_strong_ridge_keeps_the_teachers_down_projection():
    teacher = _teacher()
    student = _student(teacher)
    w0 = student.model.layers[0].mlp.down_proj.weight.clone()
    fit_bridges(teacher, student, KEEP, _batches(), ridge=1e6)
    assert torch.allclose(student.model.layers[0].mlp.down_proj.weight, w0, atol=1e-4)


def test_width_pruned_students_match_the_kept_hidden_channels():
    teacher = _teacher()
    hidden = list(range(0, 32, 2)) + [1, 3, 5, 7]  # 20 of 32 channels
    from distill.importance import first_channels
    from distill.student import student_config

    scfg = StudentConfig(keep_layers=KEEP, hidden_size=20, width_selection="importance")
    width = first_channels(teacher.config, student_config(teacher.config, scfg, KEEP))
    width = type(width)(hidden=sorted(hidden), mlp=width.mlp, heads=width.heads, kv_heads=width.kv_heads)
    student = build_student(teacher, scfg, layers=KEEP, width=width)[0].eval()
    info = fit_bridges(teacher, student, KEEP, _batches(), ridge=1e-3, hidden_channels=sorted(hidden))
    assert all(g["fit_error_after"] < g["fit_error_before"] for g in info["fits"])
    assert student.model.layers[0].mlp.down_proj.weight.shape == (20, 48)


def test_non_llama_layers_are_refused():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    with torch.device("meta"):
        model = Gemma3ForCausalLM(cfg)
    with pytest.raises(ConfigError, match="distill.student.bridge: linear needs Llama-style"):
        check_bridgeable(model)
    check_bridgeable(_teacher())  # Llama: accepted


def test_bridge_dtype_is_bfloat16_only_where_it_is_native():
    from distill.bridges import bridge_dtype
    from personagpt.hardware import CpuCapability, cpu_compute_dtype

    cpu = torch.device("cpu")
    assert bridge_dtype("float32", cpu) == torch.float32 and bridge_dtype("bfloat16", cpu) == torch.bfloat16
    assert bridge_dtype("auto", cpu, CpuCapability(avx2=True, avx512f=True, avx512_bf16=True)) == torch.bfloat16
    assert bridge_dtype("auto", cpu, CpuCapability(avx2=True)) == torch.float32  # AVX2: bf16 would be emulated
    assert bridge_dtype("auto", cpu) == (torch.bfloat16 if cpu_compute_dtype("bfloat16") == "bfloat16"
                                         else torch.float32)  # this machine's branch


def test_bfloat16_forwards_fit_nearly_the_same_bridges():
    """Only the forwards run in bf16; the sums and the solve stay fp32/fp64, so the fit barely moves."""
    teacher = _teacher()
    fits = {}
    for dtype in (torch.float32, torch.bfloat16):
        student = _student(teacher)
        info = fit_bridges(teacher, student, KEEP, _batches(), ridge=1e-3, dtype=dtype)
        fits[dtype] = info, student
    (f32, s32), (b16, s16) = fits[torch.float32], fits[torch.bfloat16]
    assert (f32["dtype"], b16["dtype"]) == ("float32", "bfloat16")
    assert all(p.dtype == torch.float32 for p in s16.parameters())  # weights stay fp32
    for a, b in zip(f32["fits"], b16["fits"], strict=True):
        assert b["fit_error_after"] < b["fit_error_before"]
        assert b["fit_error_after"] == pytest.approx(a["fit_error_after"], abs=0.02), (a, b)
    w32 = s32.model.layers[0].mlp.down_proj.weight.detach()
    w16 = s16.model.layers[0].mlp.down_proj.weight.detach()
    assert not torch.equal(w32, w16) and float((w16 - w32).norm() / w32.norm()) < 0.05


@torch.no_grad()
def _final_hidden_error(teacher, student) -> float:
    """Σ_t ‖student − teacher‖² / ‖teacher‖² of the hidden state entering the final norm (the last layer's output)."""
    err = 0.0
    for ids, mask in _batches():
        seen = []
        hooks = [m.model.norm.register_forward_pre_hook(lambda mod, a, seen=seen: seen.append(a[0]))
                 for m in (teacher, student)]
        teacher(input_ids=ids, attention_mask=mask)
        student(input_ids=ids, attention_mask=mask)
        for h in hooks:
            h.remove()
        m = mask.bool()
        th, sh = seen[0][m], seen[1][m]
        err += float((((sh - th) ** 2).sum(-1) / (th ** 2).sum(-1)).sum())
    return err


def test_all_layers_refits_every_kept_layer_in_order():
    """``layers="all"``: the gaps are fitted exactly as alone, then every other kept layer too, the last one to the
    teacher's final hidden state, which the student's then matches more closely."""
    teacher = _teacher()
    gaps_only, every = _student(teacher), _student(teacher)
    info_gaps = fit_bridges(teacher, gaps_only, KEEP, _batches(), ridge=1e-3)
    info_all = fit_bridges(teacher, every, KEEP, _batches(), ridge=1e-3, layers="all")
    assert info_all["layers"] == "all" and [g["student_layer"] for g in info_all["fits"]] == [0, 1, 2]
    assert info_all["fits"][:2] == info_gaps["fits"]
    assert info_all["fits"][2]["teacher_layers_replaced"] == []  # the teacher's last layer is kept
    assert info_all["fits"][2]["fit_error_after"] < info_all["fits"][2]["fit_error_before"]
    for name in ("model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"):
        assert torch.equal(every.state_dict()[name], gaps_only.state_dict()[name])
    assert not torch.equal(every.model.layers[2].mlp.down_proj.weight, gaps_only.model.layers[2].mlp.down_proj.weight)
    assert _final_hidden_error(teacher, every) < 0.9 * _final_hidden_error(teacher, gaps_only)
