"""The sampling defaults every model artifact's generation_config.json carries (``save_model_folder``), and the
sampled decoding ``personagpt eval`` compares with greedy (``eval.sampling``): one constant.

vLLM (``--generation-config auto``), chat clients and the report's sample answers use them when a request does not
say otherwise. Chosen with ``personagpt eval --decoding ...`` on the demo teacher (README "Decoding defaults"):
greedy repeats itself (31% of its replies loop: "I am so glad you are / I am so glad you are / ..."); T=0.7 keeps
the teacher's authorship share (0.78, the same as greedy; the real persona's 0.81) with 3% loops; a repetition
penalty (1.1 with top_p 0.9, or 1.3) removes the last loops but lowers the authorship share (0.62, 0.56) and
writes runs like ",,,,,,,,".
"""

from __future__ import annotations

from typing import Any

DECODING_DEFAULTS: dict[str, Any] = {"do_sample": True, "temperature": 0.7, "top_p": 1.0, "repetition_penalty": 1.0}
