"""The student: the teacher pruned in depth (which layers to keep) and/or width (hidden, intermediate, heads),
initialised from the teacher's weights wherever shapes allow, or the same shape from scratch. Width pruning keeps
the teacher channels :mod:`distill.importance` chose (``width_selection: importance``) or the leading ones
(``first``)."""

from __future__ import annotations

import copy
import re
from typing import Any

import torch

from distill.importance import WidthChoice, check_head_groups, first_channels, head_dim, narrowed
from distill.layer_selection import evenly_spaced
from personagpt.errors import ConfigError

_LAYER = re.compile(r"^(model\.layers\.)(\d+)(\..*)$")


def student_layers(scfg, n_teacher: int) -> list[int]:
    """Validated list of teacher layers to keep (errors name ``distill.student.*``). With
    a measured ``layer_selection`` (angular, influence) these are evenly spaced placeholders of the right count: the
    job measures the teacher and replaces them (:data:`distill.layer_selection.MEASURED`)."""
    if scfg.keep_layers is not None:
        bad = [i for i in scfg.keep_layers if not 0 <= i < n_teacher]
        if bad:
            raise ConfigError(f"distill.student.keep_layers: {bad} out of range (the teacher has layers "
                              f"0..{n_teacher - 1})")
        if len(set(scfg.keep_layers)) != len(scfg.keep_layers):
            raise ConfigError("distill.student.keep_layers: duplicate layer indices")
        return list(scfg.keep_layers)
    n = scfg.num_hidden_layers or max(1, n_teacher // 2)
    if n > n_teacher:
        raise ConfigError(f"distill.student.num_hidden_layers: {n} > the teacher's {n_teacher} layers")
    return evenly_spaced(n_teacher, n)


def student_config(teacher_config, scfg, layers: list[int]):
    cfg = copy.deepcopy(teacher_config)
    t_heads = teacher_config.num_attention_heads
    t_head_dim = getattr(teacher_config, "head_dim", None) or teacher_config.hidden_size // t_heads
    cfg.num_hidden_layers = len(layers)
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
        value = getattr(scfg, key)
        if value is not None:
            if value > getattr(teacher_config, key):
                raise ConfigError(f"distill.student.{key}: {value} is larger than the teacher's "
                                  f"{getattr(teacher_config, key)} (a student is pruned, not grown)")
            setattr(cfg, key, value)
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise ConfigError(f"distill.student.num_attention_heads ({cfg.num_attention_heads}) must be divisible by "
                          f"num_key_value_heads ({cfg.num_key_value_heads})")
    cfg.head_dim = t_head_dim  # keep the teacher's head size so pruned heads map onto whole teacher heads
    if getattr(scfg, "width_selection", "first") == "importance":
        check_head_groups(teacher_config, cfg)
    if hasattr(cfg, "layer_types") and cfg.layer_types is not None:
        cfg.layer_types = [teacher_config.layer_types[i] for i in layers]
    return cfg


def _rows(heads: list[int], hd: int) -> list[int]:
    """Projection rows of the given heads (``hd`` rows each)."""
    return [h * hd + i for h in heads for i in range(hd)]


def width_index(name: str, layer: int | None, w: WidthChoice, hd: int) -> tuple[list[int] | None, ...] | None:
    """Teacher indices along each dimension of the student parameter ``name`` (None: that dimension is not
    pruned), for the Llama-style parameter names; None for a name it does not know (then: the leading slice)."""
    hid = w.hidden
    if name.endswith(("embed_tokens.weight", "lm_head.weight")):
        return (None, hid)
    if layer is None:
        return (hid,) if name.endswith("norm.weight") else None
    q, kv, mlp = _rows(w.heads[layer], hd), _rows(w.kv_heads[layer], hd), w.mlp[layer]
    table = {"input_layernorm.weight": (hid,), "post_attention_layernorm.weight": (hid,),
             "self_attn.q_proj.weight": (q, hid), "self_attn.q_proj.bias": (q,),
             "self_attn.k_proj.weight": (kv, hid), "self_attn.k_proj.bias": (kv,),
             "self_attn.v_proj.weight": (kv, hid), "self_attn.v_proj.bias": (kv,),
             "self_attn.o_proj.weight": (hid, q), "self_attn.o_proj.bias": (hid,),
             "mlp.gate_proj.weight": (mlp, hid), "mlp.up_proj.weight": (mlp, hid), "mlp.down_proj.weight": (hid, mlp)}
    return next((v for k, v in table.items() if name.endswith("." + k)), None)


def _select(t: torch.Tensor, index: tuple[list[int] | None, ...]) -> torch.Tensor:
    for dim, idx in enumerate(index):
        if idx is not None and len(idx) != t.shape[dim]:
            t = t.index_select(dim, torch.tensor(idx, dtype=torch.long, device=t.device))
    return t


def build_student(teacher: torch.nn.Module, scfg, seed: int = 0, layers: list[int] | None = None,
                  width: WidthChoice | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the student model; returns it and facts for the manifest (layers kept, how weights were set).
    ``layers``: the teacher layers to keep, when already chosen (default: from ``scfg``). ``width``: the teacher
    channels a width-pruned student keeps (:mod:`distill.importance`; default: the leading ones, ``first``)."""
    from transformers import AutoModelForCausalLM

    layers = layers if layers is not None else student_layers(scfg, teacher.config.num_hidden_layers)
    cfg = student_config(teacher.config, scfg, layers)
    torch.manual_seed(seed)
    student = AutoModelForCausalLM.from_config(cfg, dtype=next(teacher.parameters()).dtype)
    info = {"keep_layers": layers, "init": scfg.init, "copied": 0, "sliced": 0, "random": 0}
    if narrowed(teacher.config, cfg):
        info["width_selection"] = {"method": "first" if width is None else "importance"}
    width = width or first_channels(teacher.config, cfg)
    hd = head_dim(cfg)
    if scfg.init == "teacher":
        t_state = teacher.state_dict()
        new_state = {}
        for name, param in student.state_dict().items():
            m = _LAYER.match(name)
            src = f"{m.group(1)}{layers[int(m.group(2))]}{m.group(3)}" if m else name
            t = t_state.get(src)
            if t is None or t.dim() != param.dim() or any(s > ts for s, ts in zip(param.shape, t.shape, strict=True)):
                info["random"] += 1
                continue
            if tuple(t.shape) == tuple(param.shape):
                new_state[name] = t.clone()
                info["copied"] += 1
                continue
            # width pruning: the chosen channels of the axes this parameter spans, the leading slice of the rest
            index = width_index(name, int(m.group(2)) if m else None, width, hd)
            if index is not None and len(index) == t.dim():
                t = _select(t, index)
            new_state[name] = t[tuple(slice(0, s) for s in param.shape)].clone()
            info["sliced"] += 1
        student.load_state_dict(new_state, strict=False)
        if cfg.tie_word_embeddings:
            student.tie_weights()
    else:
        info["random"] = len(student.state_dict())
    return student, info


def calibration_batches(tokenizer, samples: list[dict], label_turns: str, max_length: int, batch_size: int,
                        device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(input_ids, attention_mask)`` batches of ``samples`` (sorted by length: less padding) that the measured
    layer and width selections run the teacher on."""
    from personagpt.evaluate import collate
    from personagpt.training.batching import encode_samples

    enc = sorted(encode_samples(tokenizer, samples, label_turns, max_length), key=lambda e: len(e["input_ids"]))
    batches = []
    for i in range(0, len(enc), batch_size):
        b = collate(enc[i:i + batch_size], tokenizer.pad_token_id)
        batches.append((b["input_ids"].to(device), b["attention_mask"].to(device)))
    return batches
