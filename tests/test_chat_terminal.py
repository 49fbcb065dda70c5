"""`personagpt chat` in a terminal, driven as a person would: through a pseudo-terminal (pexpect), against the
session's real vLLM server (tokens counted by its /tokenize) and a baseline server that is killed mid-reply and
started again (the error is one line, the session survives, /retry answers once the server is back)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from fixtures.artifacts import ROOT, TINY, personagpt
from fixtures.serve import API_KEY
from personagpt.network import free_port

pexpect = pytest.importorskip("pexpect", reason="pexpect is in the dev extra (make setup)")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")
# A fresh prompt, not a redraw of the line being typed: prompt_toolkit enables bracketed paste as each prompt starts.
PROMPT = re.compile(r"\x1b\[\?2004h[^\n]*?you>")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def spawn(*args: str, timeout: float = 120):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PERSONAGPT_API_KEY": API_KEY, "TERM": "xterm",
           "PROMPT_TOOLKIT_NO_CPR": "1"}  # a pty that answers no cursor-position requests
    child = pexpect.spawn(sys.executable, ["-m", "personagpt.cli", "chat", *args], cwd=str(ROOT), env=env,
                          encoding="utf-8", timeout=timeout, dimensions=(50, 200))
    child.expect(PROMPT)
    return child


def say(child, line: str) -> str:
    """Type a line, return what came back before the next prompt (escape codes removed)."""
    child.sendline(line)
    child.expect(PROMPT)
    out = plain(child.before)
    return out[out.find(line) + len(line):] if line in out else out


def reply_of(out: str) -> str:
    assert "persona> " in out, out
    return out.split("persona> ", 1)[1].strip()


@pytest.mark.slow
def test_terminal_chat_against_vllm(vllm_server, serve_artifact, tmp_path):
    from personagpt.chat.client import ChatClient
    from personagpt.chat.history import TokenizerCounter

    # the server's /tokenize and the artifact's tokenizer count the same prompt identically
    msgs = [{"role": "user", "content": "hello there, how are you?"}, {"role": "assistant", "content": "fine"},
            {"role": "user", "content": "and today?"}]
    client = ChatClient(vllm_server.url, API_KEY)
    assert client.tokenize(vllm_server.model, msgs) == TokenizerCounter(serve_artifact)(msgs)
    client.close()

    child = spawn("--url", vllm_server.url, "--model", vllm_server.model)
    banner = plain(child.before)
    assert f"chatting with {vllm_server.model!r}" in banner and "the server's /tokenize" in banner
    assert "temperature=1.0" in say(child, "/set max_tokens=24 temperature=1.0")
    first = reply_of(say(child, "hello, who are you?"))
    second = reply_of(say(child, "what do you do on weekends?"))
    assert first and second  # streamed text arrived for both turns
    hist = say(child, "/history")
    assert "truncation: the system prompt is always kept" in hist and f"served context ({vllm_server.max_model_len}" \
        in hist
    assert "2. you: what do you do on weekends?" in hist
    assert "removed: 'what do you do on weekends?' and its reply" in say(child, "/undo")
    retried = reply_of(say(child, "/retry"))
    assert retried
    hist = say(child, "/history")
    assert "1. you: hello, who are you?" in hist and "2. you:" not in hist
    out = tmp_path / "chat.jsonl"
    assert f"saved 1 conversation(s) to {out}" in say(child, f"/save {out}")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in plain(child.before)

    line = json.loads(out.read_text())
    assert [m["role"] for m in line["messages"]] == ["user", "assistant"]
    assert line["messages"][1]["content"].strip() == retried
    data = tmp_path / "data"
    proc = personagpt("data", "prepare", "--config", str(TINY), "data.format=jsonl", f"data.path={out}",
                      "data.persona=assistant", "data.val_fraction=0", "data.test_fraction=0",
                      "model.vocab_size=300", "--out", str(data))
    assert json.loads(proc.stdout)["splits"]["train"] == 1


def start_baseline(artifact, port: int) -> dict:
    """serve/run.py --wait: returns once ready, the server left running in its own process group."""
    proc = subprocess.run([sys.executable, str(ROOT / "serve" / "run.py"), "--artifact", str(artifact),
                           "--engine", "baseline", "--port", str(port), "--wait"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PERSONAGPT_API_KEY": API_KEY})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.slow
def test_server_killed_mid_reply_then_back(serve_artifact):
    from personagpt.process_group import group_members, stop_group

    port = free_port()
    rec = start_baseline(serve_artifact, port)
    child = None
    try:
        child = spawn("--url", rec["url"], "--artifact", str(serve_artifact))
        say(child, "/set max_tokens=400 temperature=1.0")
        child.sendline("tell me a long story")
        child.expect("persona> ")
        child.expect(r"\S{3}")  # the reply is streaming
        os.killpg(rec["pgid"], signal.SIGKILL)
        child.expect(PROMPT)
        out = plain(child.before)
        errors = [ln for ln in out.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and "dropped mid-reply" in errors[0], out
        assert "Traceback" not in out
        while group_members(rec["pgid"]):
            time.sleep(0.1)
        down = say(child, "/retry")
        assert "error: server unreachable" in down and "Traceback" not in down
        assert "(no reply yet: /retry)" in say(child, "/history")  # the session and its message survived
        rec = start_baseline(serve_artifact, port)
        say(child, "/set max_tokens=16")
        assert reply_of(say(child, "/retry"))
        assert "persona: (no reply yet" not in say(child, "/history")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        if child is not None and child.isalive():
            child.terminate(force=True)
        if group_members(rec["pgid"]):
            stop_group(rec["pgid"], 30)


@pytest.mark.slow
def test_artifact_starts_its_own_server_and_ctrl_c_stops_it(serve_artifact):
    from personagpt.network import port_in_use

    child = spawn("--artifact", str(serve_artifact), "--engine", "baseline", timeout=300)
    url = re.search(r"ready: (http://127\.0\.0\.1:(\d+))", plain(child.before))
    assert url, plain(child.before)
    port = int(url.group(2))
    assert port_in_use("127.0.0.1", port)
    assert reply_of(say(child, "/set max_tokens=8") and say(child, "hi"))
    child.sendintr()  # Ctrl-C at the prompt ends the chat and the server it started
    child.expect(pexpect.EOF)
    out = plain(child.before)
    assert "bye" in out and "server stopped" in out and "Traceback" not in out, out
    child.close()
    assert child.exitstatus == 0
    assert not port_in_use("127.0.0.1", port)
