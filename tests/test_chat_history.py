"""personagpt chat's memory: the system prompt from the artifact's lineage, truncation by real tokens (the tiny
artifact's own tokenizer and chat template), slash commands that change nothing when they fail, transcripts
that `data.format: jsonl` reads, and the command `make demo` prints."""

import json

import pytest

from fixtures.artifacts import TINY, TINY_OVERRIDES, personagpt
from personagpt.chat.client import ChatClient, ChatError
from personagpt.chat.command import chat_command
from personagpt.chat.commands import history_text, run_command
from personagpt.chat.history import History, TokenizerCounter, Turn, trained_system_prompt
from personagpt.chat.session import Session
from personagpt.paths import RunLayout

SYSTEM = "You are chatting with a stranger online. Reply casually."


@pytest.fixture(scope="module")
def persona_artifact(tmp_path_factory):
    """A model artifact whose dataset was prepared with a system prompt (real data prepare + model init)."""
    root = tmp_path_factory.mktemp("chat-lineage")
    overrides = [*TINY_OVERRIDES, "data.max_conversations=30", f"data.system_prompt={SYSTEM}"]
    personagpt("data", "prepare", "--config", str(TINY), *overrides, "--out", str(root / "data"))
    personagpt("model", "init", "--config", str(TINY), *overrides, "--dataset", str(root / "data"),
               "--out", str(root / "model"))
    return root / "model"


def test_system_prompt_comes_from_the_lineage(persona_artifact, tiny_model_artifact):
    assert trained_system_prompt(persona_artifact) == SYSTEM
    assert trained_system_prompt(tiny_model_artifact) is None  # the tiny preset has none


def long_history(system, n=30):
    h = History(system)
    for i in range(n):
        h.turns.append(Turn(f"question number {i}: what did you do on the weekend and why was it fun?",
                            f"answer number {i}: I went hiking with friends, the weather was great and we laughed"))
    h.turns.append(Turn("and the newest question?"))
    return h


def test_truncation_keeps_system_prompt_and_newest_turns_and_fits(persona_artifact):
    count = TokenizerCounter(persona_artifact)
    h = long_history(SYSTEM)
    context, max_tokens = 256, 64
    assert count(h.messages()) + max_tokens > 3 * context  # far longer than the context
    fitted = h.fit(count, context, max_tokens)
    msgs = fitted.messages
    assert msgs[0] == {"role": "system", "content": SYSTEM}
    assert msgs[-1] == {"role": "user", "content": "and the newest question?"}
    kept = h.turns[fitted.dropped:]
    assert msgs == h.messages(kept) and fitted.dropped > 0  # a suffix of the turns: the oldest went first
    assert fitted.prompt_tokens == count(msgs) and fitted.prompt_tokens + max_tokens <= context
    assert count(h.messages(h.turns[fitted.dropped - 1:])) + max_tokens > context  # as many turns as fit
    # the rendered prompt's token count is what the tokenizer gives for the template's text: no word counting
    text = count.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert fitted.prompt_tokens == len(count.tok(text, add_special_tokens=False)["input_ids"])


def test_overflow_of_one_message_is_one_line(persona_artifact):
    count = TokenizerCounter(persona_artifact)
    h = History(SYSTEM)
    h.turns.append(Turn("word " * 400))
    with pytest.raises(ChatError, match="context overflow") as e:
        h.fit(count, 256, 64)
    assert "\n" not in str(e.value)


def offline_session(artifact, tmp_path):
    """A session whose server is not running: everything but sending works."""
    client = ChatClient("http://127.0.0.1:9", None)
    return Session(client, "m", trained_system_prompt(artifact), lambda s: TokenizerCounter(artifact), context=256)


def test_commands_and_transcript_reimport(persona_artifact, tmp_path):
    s = offline_session(persona_artifact, tmp_path)
    with pytest.raises(ChatError, match="server unreachable"):
        list(s.send("hello"))
    assert [t.reply for t in s.history.turns] == [None]  # the message stays, unanswered, for /retry
    s.history.turns[-1].reply = "hi! how are you"
    s.history.turns.append(Turn("fine, and you?", "great, thanks"))
    assert "truncation: the system prompt is always kept" in history_text(s)
    assert run_command(s, "/set temperature=0.5 max_tokens=32") == "temperature=0.5 top_p=server default max_tokens=32"
    for bad in ("/set temperature=hot", "/set colour=3", "/set max_tokens=0", "/nope"):
        with pytest.raises(ChatError):
            run_command(s, bad)
    assert s.settings.temperature == 0.5 and s.max_tokens == 32
    assert "removed" in run_command(s, "/undo") and len(s.history.turns) == 1
    run_command(s, "/new")
    s.history.turns.append(Turn("second chat", "sure"))
    out = tmp_path / "chat.jsonl"
    assert "saved 2 conversation(s)" in run_command(s, f"/save {out}")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant"]
    assert lines[0]["messages"][0]["content"] == SYSTEM
    data = tmp_path / "data"
    personagpt("data", "prepare", "--config", str(TINY), "data.format=jsonl", f"data.path={out}",
               "data.persona=assistant", "data.val_fraction=0", "data.test_fraction=0", "model.vocab_size=300",
               "--out", str(data))
    train = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    assert {s["messages"][-1]["content"] for s in train} == {"hi! how are you", "sure"}


def test_chat_command_names_the_served_artifact(tmp_path, tiny_model_artifact, monkeypatch):
    layout = RunLayout.of("tiny", tmp_path)
    assert chat_command(layout, TINY) is None  # nothing served yet
    layout.loadtest_root.mkdir(parents=True)
    (layout.loadtest_root / "done.json").write_text(json.dumps(
        {"models": {"quantize": {"artifact": str(tiny_model_artifact)}}}))
    monkeypatch.chdir(tmp_path)
    cmd = chat_command(layout, TINY, ["train.max_steps=3", "serve.kv_cache_gib=2"])
    assert cmd == f"personagpt chat --artifact {tiny_model_artifact} --config {TINY} serve.kv_cache_gib=2"
