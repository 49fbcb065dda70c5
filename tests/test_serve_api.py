"""The OpenAI API of both servers (real vLLM on CPU, and the Hugging Face baseline) over the same tiny artifact.

Every test taking ``server`` runs against both; the vLLM case is marked slow (its session server takes ~1-2 min
to start on 2 cores); tests that only vLLM can pass take ``vllm_server``.
"""

from __future__ import annotations

import json
import math
import threading

import pytest
import requests

MESSAGES = [{"role": "system", "content": "You are Sam. Answer like Sam."},
            {"role": "user", "content": "hey, how was the weekend?"},
            {"role": "assistant", "content": "pretty good, went hiking"},
            {"role": "user", "content": "nice! where did you go?"}]


@pytest.fixture(scope="session")
def hf(serve_artifact):
    """The artifact loaded with plain transformers (fp32, CPU): the reference for greedy decoding."""
    import torch

    from personagpt.models import load_model

    model, tok = load_model(serve_artifact, dtype=torch.float32)
    return model, tok


def hf_greedy(hf, prompt_ids: list[int], max_new_tokens: int) -> dict:
    """Greedy generation with Hugging Face generate; ids, text and the chosen tokens' log-probabilities."""
    import torch

    model, tok = hf
    x = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    new = out.sequences[0, len(prompt_ids):].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, new, strict=True)]
    eos = model.generation_config.eos_token_id
    eos = {eos} if isinstance(eos, int) else set(eos or [])
    finished = bool(new) and new[-1] in eos
    text = tok.decode(new[:-1] if finished else new, skip_special_tokens=True)
    return {"ids": new, "text": text, "logprobs": logprobs, "finish_reason": "stop" if finished else "length"}


def chat_prompt_ids(hf, messages) -> list[int]:
    _, tok = hf
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tok(text, add_special_tokens=False)["input_ids"]


def post(server, path: str, body, headers=None, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{server.url}{path}", data=data, timeout=120,
                         headers={"Content-Type": "application/json",
                                  **(server.headers if headers is None else headers)},
                         **kw)


def sse_events(resp: requests.Response) -> list:
    """Parse a text/event-stream body: the JSON of every ``data:`` event, and the final "[DONE]"."""
    events = []
    for line in resp.iter_lines(decode_unicode=True):
        if not line:
            continue
        assert line.startswith("data: "), line
        payload = line[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


# --------------------------------------------------------------------------------------------------- routes


def test_models(server):
    r = requests.get(f"{server.url}/v1/models", headers=server.headers, timeout=30)
    assert r.status_code == 200
    data = r.json()["data"]
    assert [m["id"] for m in data] == [server.model]
    assert data[0]["max_model_len"] == server.max_model_len == 512


def test_health(server):
    assert requests.get(f"{server.url}/health", timeout=30).status_code == 200


def test_completion_matches_hf_greedy(server, hf):
    _, tok = hf
    prompt = "hey, how was the weekend?"
    r = post(server, "/v1/completions", {"model": server.model, "prompt": prompt, "max_tokens": 12, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = tok(prompt)["input_ids"]
    ref = hf_greedy(hf, ids, 12)
    assert body["object"] == "text_completion"
    assert body["usage"]["prompt_tokens"] == len(ids)
    assert body["usage"]["completion_tokens"] == len(ref["ids"])
    assert body["choices"][0]["text"] == ref["text"]
    assert body["choices"][0]["finish_reason"] == ref["finish_reason"]


def test_chat_applies_template_and_matches_hf_greedy(server, hf):
    """At temperature 0 the chat answer equals Hugging Face greedy generation for the same messages, and the
    prompt is exactly the artifact's chat template (same token count)."""
    r = post(server, "/v1/chat/completions",
             {"model": server.model, "messages": MESSAGES, "max_tokens": 24, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = chat_prompt_ids(hf, MESSAGES)
    ref = hf_greedy(hf, ids, 24)
    assert body["object"] == "chat.completion"
    assert body["usage"]["prompt_tokens"] == len(ids)
    assert body["usage"]["completion_tokens"] == len(ref["ids"])
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant"
    assert msg["content"] == ref["text"]
    assert body["choices"][0]["finish_reason"] == ref["finish_reason"]


@pytest.mark.slow
def test_vllm_tokens_and_logprobs_match_hf(vllm_server, hf):
    """Stronger than text: vLLM's token ids and the log-probabilities of the chosen tokens equal HF's (fp32)."""
    r = post(vllm_server, "/v1/chat/completions",
             {"model": vllm_server.model, "messages": MESSAGES, "max_tokens": 24, "temperature": 0,
              "logprobs": True, "top_logprobs": 1, "return_token_ids": True})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    ref = hf_greedy(hf, chat_prompt_ids(hf, MESSAGES), 24)
    assert choice["token_ids"] == ref["ids"]
    got = [c["logprob"] for c in choice["logprobs"]["content"]]
    assert len(got) == len(ref["logprobs"])
    worst = max(abs(a - b) for a, b in zip(got, ref["logprobs"], strict=True))
    assert worst < 1e-3, f"largest logprob difference vs HF: {worst}"


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_streaming_sse(server, route):
    chat = route.endswith("chat/completions")
    base = {"model": server.model, "max_tokens": 16, "temperature": 0}
    base.update({"messages": MESSAGES} if chat else {"prompt": "hello there"})
    whole = post(server, route, base).json()
    r = post(server, route, {**base, "stream": True, "stream_options": {"include_usage": True}}, stream=True)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == ("chat.completion.chunk" if chat else "text_completion") for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    pieces = [ch for c in chunks for ch in c["choices"]]
    text = "".join((p["delta"].get("content") or "") if chat else p["text"] for p in pieces)
    reasons = [p["finish_reason"] for p in pieces if p["finish_reason"]]
    expected = whole["choices"][0]["message"]["content"] if chat else whole["choices"][0]["text"]
    assert text == expected
    assert reasons == [whole["choices"][0]["finish_reason"]]
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert chunks[-1]["choices"] == []
    assert {k: chunks[-1]["usage"][k] for k in counts} == {k: whole["usage"][k] for k in counts}
    assert sum(1 for p in pieces if p.get("text") or (p.get("delta") or {}).get("content")) >= 2  # incremental


def test_openai_client(server):
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.api_key, max_retries=0, timeout=120)
    assert [m.id for m in client.models.list()] == [server.model]
    chat = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=8, temperature=0)
    assert chat.choices[0].message.role == "assistant"
    assert 1 <= chat.usage.completion_tokens <= 8
    stream = client.chat.completions.create(model=server.model, messages=MESSAGES, max_tokens=8, temperature=0,
                                            stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == chat.choices[0].message.content
    comp = client.completions.create(model=server.model, prompt="hello", max_tokens=5, temperature=0)
    assert comp.usage.completion_tokens <= 5 and isinstance(comp.choices[0].text, str)
    bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong-key", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_sampling_is_seeded(server):
    body = {"model": server.model, "prompt": "hello", "max_tokens": 8, "temperature": 1.0, "seed": 1234}
    a, b = post(server, "/v1/completions", body).json(), post(server, "/v1/completions", body).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


# ------------------------------------------------------------------------------------------------ API key


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}],
                         ids=["missing", "wrong", "scheme"])
def test_api_key_enforced(server, headers):
    r = requests.get(f"{server.url}/v1/models", headers=headers, timeout=30)
    assert r.status_code == 401
    r = post(server, "/v1/chat/completions", {"model": server.model, "messages": MESSAGES, "max_tokens": 2},
             headers=headers)
    assert r.status_code == 401


# ------------------------------------------------------------------------------------------ bad requests

LONG = "hello there " * 400  # > 512 tokens


@pytest.mark.parametrize("route,body,status", [
    ("/v1/chat/completions", b'{"model": "M", "messages": [{"role": "user", "content": "hi"}', 400),
    ("/v1/chat/completions", b"not json at all", 400),
    ("/v1/chat/completions", {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}, 404),
    ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**6}, 400),
    ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400),
    ("/v1/chat/completions", {"model": "M"}, 400),
    ("/v1/completions", {"model": "M", "prompt": LONG, "max_tokens": 4}, 400),
    ("/v1/chat/completions", {"model": "M", "messages": [{"role": "user", "content": LONG}]}, 400),
    ("/v1/completions", {"model": "M", "prompt": "hi", "max_tokens": "many"}, 400),
], ids=["truncated-json", "not-json", "unknown-model", "huge-max-tokens", "negative-temperature",
        "no-messages", "prompt-too-long", "chat-too-long", "max-tokens-type"])
def test_malformed_requests_get_4xx_and_server_keeps_serving(server, route, body, status):
    if isinstance(body, dict):
        body = json.dumps(body).replace('"M"', json.dumps(server.model))
    r = post(server, route, body)
    assert r.status_code == status, r.text
    assert "error" in r.json()
    ok = post(server, "/v1/completions", {"model": server.model, "prompt": "hi", "max_tokens": 2, "temperature": 0})
    assert ok.status_code == 200, ok.text


def test_concurrent_requests(server):
    """Eight requests at once: all answered (vLLM batches them; the baseline queues them on its lock)."""
    results: list = []

    def one(i):
        r = post(server, "/v1/completions", {"model": server.model, "prompt": f"hello {i}", "max_tokens": 16,
                                             "temperature": 0, "ignore_eos": True})
        results.append((r.status_code, r.json()["usage"]["completion_tokens"] if r.ok else r.text))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert results == [(200, 16)] * 8


# ------------------------------------------------------------------------------------------------ metrics


@pytest.mark.slow
def test_vllm_metrics(vllm_server):
    post(vllm_server, "/v1/completions", {"model": vllm_server.model, "prompt": "hi", "max_tokens": 3})
    r = requests.get(f"{vllm_server.url}/metrics", timeout=30)
    assert r.status_code == 200
    metrics = {}
    for line in r.text.splitlines():
        if line.startswith("vllm:") and "{" in line:
            name = line.split("{", 1)[0]
            metrics[name] = metrics.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"):
        assert name in metrics, name
    assert metrics["vllm:generation_tokens_total"] >= 3
    assert metrics["vllm:prompt_tokens_total"] >= 1
    assert not math.isnan(metrics["vllm:kv_cache_usage_perc"])


def test_baseline_metrics(baseline_server):
    post(baseline_server, "/v1/completions", {"model": baseline_server.model, "prompt": "hi", "max_tokens": 3})
    text = requests.get(f"{baseline_server.url}/metrics", timeout=30).text
    assert "baseline:num_requests_waiting" in text
    gen = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
           if line.startswith("baseline:generation_tokens_total")]
    assert gen and gen[0] >= 3
