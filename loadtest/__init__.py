"""Locust load tests for the OpenAI-compatible servers of serve/ (see loadtest/run.py)."""
