"""Names under which the Locust users report (shared with the summary, which reads Locust's CSV)."""

CHAT_PATH = "/v1/chat/completions"  # request_type POST: the whole streamed request (end-to-end latency)
LLM_TYPE = "LLM"
TTFT_NAME = "TTFT"  # time to first token
ITL_NAME = "ITL"    # time per output token after the first
