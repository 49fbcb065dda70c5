"""Linear bridges over the layers a depth-pruned student drops (``distill.student.bridge: linear``).

Dropping teacher layers ``k+1 .. j-1`` leaves a gap in the residual stream: the student's layer that copies teacher
layer ``k`` feeds the copy of layer ``j`` a hidden state the teacher would only have produced after the dropped
layers. A bridge folds the dropped layers' average effect into the kept layer before the gap, with no extra
parameters: that layer's MLP down-projection is refit by ridge regression so that its output matches the
teacher's hidden state entering layer ``j`` on calibration tokens (ReplaceMe, Shopkhoev et al. 2025, "Network
Simplification via Layer Pruning and Linear Transformations", fits a linear map on the MLP output; refitting the
whole down-projection, which contains that map, measured lower perplexity here).

Rules:

- Per gap: inputs ``a`` = the input of the kept layer's ``down_proj`` (its MLP activations), target ``r`` = the
  teacher's hidden state entering layer ``j`` minus the kept layer's residual after attention, so
  ``residual + down_proj(a) ≈ teacher hidden``. The fit minimises ``Σ_t w_t² ‖W a_t − r_t‖² + λ ‖W − W₀‖²``:
  ridge toward the teacher's own down-projection ``W₀``, with ``λ = ridge × mean(diag Σ w² a aᵀ)``.
- ``w_t = 1 / ‖teacher hidden_t‖``: every token counts by its relative error, so the few tokens with huge
  residual norms (attention sinks) do not decide the fit.
- Gaps are fitted in order, each on the student's own activations with the earlier bridges already in place, so
  a bridge also corrects the error the layers before it leave. Padding never counts.
- ``bridge_layers: all`` refits every kept layer's down-projection the same way, in order, each toward the
  teacher's hidden state after its own teacher layer (the last one: the teacher's final hidden state, before the
  final norm), so the layers after a gap also absorb what the bridge could not fit. Measured (16 influence layers
  of the demo teacher, 512 samples, bf16, one process): untrained val ppl 78.06 vs 79.58 for the gaps alone, in
  173.8 s vs 97.5 s (before a fitted layer's output was computed from its kept activations; 1,024 samples on all
  layers now: 66.30 in 306.3 s).
- A gap before the first kept layer (nothing to fold into) is left as it is; so is, with ``gaps``, a gap after the
  last kept layer. A student whose layers are not Llama-style (pre-norm attention and MLP added straight to the
  residual: Llama, Qwen2, SmolLM2) is refused with a ConfigError.
- Cost: both residual streams advance one layer at a time, every calibration batch's hidden state kept between
  layers (one fp32 hidden-state tensor per batch and model), so each layer runs once per batch; a fitted layer's
  MLP activations are kept while it is fitted, and its output with the refit weights is computed from them.
- Distributed: every rank accumulates the Gram matrices of its share of the batches; they are summed across
  ranks, so every rank solves the same system and all ranks get the same weights.
- ``bridge_dtype``: the teacher's and the student's forwards may run in bfloat16 autocast (``auto``: where the
  hardware computes bf16 natively: CUDA, or a CPU with avx512_bf16/AMX); the Gram sums and the solve are always
  fp32/fp64. Measured on 512 samples (Intel Xeon, avx512_bf16): untrained val ppl 79.67 with a bf16 teacher
  forward vs 79.69 in fp32, the teacher's share of the fit 48.5 s vs 95.8 s.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from personagpt.errors import ConfigError


class _Stop(Exception):
    """Raised by a hook once the student has run up to the layer being fitted (the rest is not needed)."""


def gaps(keep: list[int]) -> list[int]:
    """Student layers followed by dropped teacher layers (before the next kept one)."""
    return [s for s in range(len(keep) - 1) if keep[s + 1] != keep[s] + 1]


def check_bridgeable(model: torch.nn.Module) -> None:
    layer = model.model.layers[0] if hasattr(model, "model") and hasattr(model.model, "layers") else None
    llama_style = (layer is not None and hasattr(layer, "post_attention_layernorm") and hasattr(layer, "mlp")
                   and hasattr(layer.mlp, "down_proj") and not hasattr(layer, "post_feedforward_layernorm"))
    if not llama_style:
        raise ConfigError(f"distill.student.bridge: linear needs Llama-style decoder layers (MLP output added straight "
                          f"to the residual); {type(model).__name__} has other layers (use bridge: none)")


def bridge_dtype(name: str, device: torch.device, cpu=None) -> torch.dtype:
    """``distill.student.bridge_dtype`` -> the forwards' dtype. ``auto``: bfloat16 where it is native (a CUDA
    device that supports it: ``personagpt.device.dtype``; a CPU with avx512_bf16 or AMX:
    ``personagpt.hardware.cpu_compute_dtype``, ``cpu`` a ``CpuCapability`` for tests), else float32: an AVX2 CPU
    emulates bf16 and would be slower."""
    from personagpt.device import DTYPES
    from personagpt.device import dtype as pick_dtype
    from personagpt.hardware import cpu_compute_dtype

    if name != "auto":
        return DTYPES[name]
    if device.type == "cpu":
        return DTYPES[cpu_compute_dtype("bfloat16", cpu)]
    return pick_dtype("auto", device)


class _Stream:
    """The residual stream of one decoder stack on the calibration batches, advanced one layer at a time: every
    batch's hidden state entering layer ``at`` is kept, so each layer runs once per batch however many layers
    are fitted. A layer runs through the stack's own forward with its layer list swapped for that one layer and
    the kept hidden state as ``inputs_embeds`` (the same rotary embedding and causal mask as a whole forward)."""

    def __init__(self, decoder: torch.nn.Module, batches, dtype: torch.dtype):
        self.decoder, self.batches, self.dtype, self.at = decoder, batches, dtype, 0
        self.states = [self._run(0, input_ids=ids, attention_mask=mask, capture="input") for ids, mask in batches]

    def _run(self, index: int, capture: str = "output", **inputs) -> torch.Tensor:
        """The hidden state entering (``capture="input"``) or leaving layer ``index``; nothing after it runs."""
        layers, layer, seen = self.decoder.layers, self.decoder.layers[index], {}

        def keep_input(module, args, kwargs):
            seen["h"] = args[0] if args else kwargs["hidden_states"]
            raise _Stop

        def keep_output(module, args, output):
            seen["h"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        hook = (layer.register_forward_pre_hook(keep_input, with_kwargs=True) if capture == "input"
                else layer.register_forward_hook(keep_output))
        if "inputs_embeds" in inputs:
            self.decoder.layers = torch.nn.ModuleList([layer])
        try:
            with torch.autocast(inputs["attention_mask"].device.type, dtype=self.dtype,
                                enabled=self.dtype != torch.float32):
                self.decoder(**inputs, use_cache=False)
        except _Stop:
            pass
        finally:
            hook.remove()
            self.decoder.layers = layers
        return seen["h"].float()

    def step(self, hooks: dict[str, Any] | None = None, on_batch=None, advance: bool = True) -> None:
        """Run layer ``at`` on every batch and move the stream past it (``advance=False``: only run it).
        ``hooks``: forward pre-hooks of the layer's submodules (by name) while it runs; ``on_batch(i, mask)``
        after each batch."""
        handles = [self.decoder.layers[self.at].get_submodule(name).register_forward_pre_hook(fn)
                   for name, fn in (hooks or {}).items()]
        try:
            for i, (_, mask) in enumerate(self.batches):
                out = self._run(self.at, inputs_embeds=self.states[i], attention_mask=mask)
                if on_batch is not None:
                    on_batch(i, mask)
                if advance:
                    self.states[i] = out
        finally:
            for h in handles:
                h.remove()
        self.at += advance

    def move_past(self, states: list[torch.Tensor]) -> None:
        """Move past layer ``at`` with its outputs computed elsewhere (``states``: one per batch)."""
        self.states, self.at = states, self.at + 1

    def advance_to(self, index: int) -> None:
        while self.at < index:
            self.step()

    def hidden(self, i: int, channels: list[int] | None = None) -> torch.Tensor:
        """Batch ``i``'s hidden state entering layer ``at``, real tokens only (``channels``: those kept)."""
        h = self.states[i][self.batches[i][1].bool()]
        return h if channels is None else h[:, channels]


def _layer_statistics(student: _Stream, teacher: _Stream, hidden: list[int] | None):
    """Run the student's layer ``student.at`` (the stream stays before it) and accumulate over this rank's tokens
    the weighted sums ``G = Σ w² a aᵀ``, ``B = Σ w² a rᵀ``, ``rr = Σ w² ‖r‖²`` of its down-projection's fit to
    the teacher's hidden state where the teacher's stream stands; and per batch the layer's residual after
    attention and its down-projection's input, from which its output with any weights follows."""
    proj = student.decoder.layers[student.at].mlp.down_proj
    n_in, n_out = proj.in_features, proj.out_features
    G = torch.zeros(n_in, n_in, dtype=torch.float64, device=proj.weight.device)
    B = torch.zeros(n_in, n_out, dtype=torch.float64, device=proj.weight.device)
    rr = torch.zeros((), dtype=torch.float64, device=proj.weight.device)
    seen: dict[str, torch.Tensor] = {}
    kept: list[tuple[torch.Tensor, torch.Tensor]] = []

    def accumulate(i: int, mask: torch.Tensor) -> None:
        nonlocal rr
        kept.append((seen["resid"], seen["act"]))
        m = mask.bool()
        target = teacher.hidden(i, hidden)
        w = 1.0 / target.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        act = seen["act"][m].float() * w
        r = (target - seen["resid"][m].float()) * w
        G.add_((act.T @ act).double())
        B.add_((act.T @ r).double())
        rr += (r.double() ** 2).sum()

    student.step({"post_attention_layernorm": lambda m, a: seen.__setitem__("resid", a[0]),
                  "mlp.down_proj": lambda m, a: seen.__setitem__("act", a[0])}, accumulate, advance=False)
    return G, B, rr, kept


def _all_reduce(*tensors: torch.Tensor) -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        for t in tensors:
            torch.distributed.all_reduce(t)


def _relative_error(W: torch.Tensor, G, B, rr) -> float:
    """``Σ w² ‖W a − r‖² / Σ w² ‖r‖²`` from the accumulated sums (W: out × in)."""
    err = (W @ G * W).sum() - 2 * (W * B.T).sum() + rr
    return float(err / rr)


def fitted_layers(keep: list[int], layers: str) -> list[int]:
    """The student layers whose down-projection is refit: ``gaps`` = those before a run of dropped layers,
    ``all`` = every kept layer."""
    return gaps(keep) if layers == "gaps" else list(range(len(keep)))


@torch.no_grad()
def fit_bridges(teacher: torch.nn.Module, student: torch.nn.Module, keep: list[int], batches,
                ridge: float, hidden_channels: list[int] | None = None,
                dtype: torch.dtype = torch.float32, layers: str = "gaps") -> dict[str, Any]:
    """Refit the down-projections of ``fitted_layers(keep, layers)`` in place, in order (``batches``: this rank's
    share of the calibration ``(input_ids, attention_mask)`` batches, on the models' device; ``dtype``: the
    forwards'); returns the manifest's facts."""
    check_bridgeable(student)
    started = time.perf_counter()
    teacher.eval()
    student.eval()
    fitted = set(fitted_layers(keep, layers))
    t_stream, s_stream = _Stream(teacher.base_model, batches, dtype), _Stream(student.model, batches, dtype)
    report = []
    for s in range(len(keep)):
        if s not in fitted:
            s_stream.step()
            continue
        # target: the teacher's stream entering the next kept layer; after the last, the final norm's input
        target = keep[s + 1] if s + 1 < len(keep) else teacher.config.num_hidden_layers
        t_stream.advance_to(target)
        proj = student.model.layers[s].mlp.down_proj
        W0 = proj.weight.double()
        G, B, rr, kept = _layer_statistics(s_stream, t_stream, hidden_channels)
        _all_reduce(G, B, rr)
        lam = ridge * G.diagonal().mean()
        eye = torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
        W = torch.linalg.solve(G + lam * eye, B + lam * W0.T).T
        before, after = _relative_error(W0, G, B, rr), _relative_error(W, G, B, rr)
        proj.weight.copy_(W.to(proj.weight.dtype))
        # past the layer with its refit weights (its output is residual + down_proj(a)): the next fits see the
        # student's own stream
        s_stream.move_past([resid + proj(act.to(proj.weight.dtype)) for resid, act in kept])
        del kept
        report.append({"student_layer": s, "teacher_layers_replaced": list(range(keep[s] + 1, target)),
                       "fit_error_before": round(before, 4), "fit_error_after": round(after, 4)})
    tokens = torch.tensor(float(sum(int(m.sum()) for _, m in batches)), dtype=torch.float64,
                          device=next(student.parameters()).device)
    _all_reduce(tokens)
    return {"method": "linear", "layers": layers, "ridge": ridge, "dtype": str(dtype).removeprefix("torch."),
            "fits": report, "tokens": int(tokens), "seconds": round(time.perf_counter() - started, 1)}
