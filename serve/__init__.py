"""Serving: vLLM's OpenAI-compatible server for any model artifact, and a plain Hugging Face baseline server.

Entry point: ``python serve/run.py --artifact DIR [--port P] [--wait]`` (see serve/run.py).
"""
