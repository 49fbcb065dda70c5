"""Post-training quantization of model artifacts: GPTQ (Optimum/GPTQModel), int8 W8A8 (llm-compressor,
compressed-tensors), ONNX Runtime int8. Entry: ``python quantize/run.py``; benchmark: ``python quantize/bench.py``."""
