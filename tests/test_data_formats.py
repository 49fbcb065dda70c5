"""CSV and JSONL inputs (including Ukrainian text), sessions by time gaps, persona selection."""

import csv
import json

from fixtures.artifacts import personagpt
from personagpt.artifacts import read_manifest
from personagpt.data.prepare import read_split
from personagpt.tokenizer import load_tokenizer

UK = [("Привіт! Як справи?", "Добре, дякую. А в тебе?"),
      ("Що робиш у вихідні?", "Їду до Львова, на каву й до бабусі ґречно вклонитися."),
      ("Ого, а коли повернешся?", "У неділю ввечері, якщо потяг не запізниться 😅")]
EN = [("hey there", "hi! how are you"), ("good, you?", "tired but fine"), ("what are you up to", "coding all day")]


def write_csv(path, rows, header=("Context", "question", "answer", "time_diff_seconds", "conversation_id", "speaker")):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def csv_rows(n_convs=12):
    rows = []
    for c in range(n_convs):
        pairs = UK if c % 2 else EN
        for i, (q, a) in enumerate(pairs):
            gap = 7200 if (c % 3 == 0 and i == 2) else 20  # some conversations have a 2h gap -> a new session
            rows.append(("" if i else "(met in a chat room)", f"{q} #{c}", f"{a} #{c}", gap, f"conv{c}",
                         "olena" if c % 2 else "sam"))
            rows.append(("", f"another question {c}-{i}", f"bob says {c}-{i}", 5, f"conv{c}", "bob"))
    return rows


def prepare(tmp_path, fmt, path, *overrides, name="out"):
    out = tmp_path / name
    personagpt("data", "prepare", f"data.format={fmt}", f"data.path={path}", "model.vocab_size=400",
               "data.val_fraction=0.2", "data.test_fraction=0.2", *overrides, "--out", str(out))
    return out


def all_samples(out):
    return [s for split in ("train", "val", "test") for s in read_split(out, split)]


def test_csv_ukrainian_roundtrip_and_persona(tmp_path):
    out = prepare(tmp_path, "csv", write_csv(tmp_path / "log.csv", csv_rows()), "data.persona=olena",
                  "data.session_gap_seconds=3600")
    m = read_manifest(out)
    assert m["persona"] == "olena" and m["source"].startswith("csv:")
    samples = all_samples(out)
    replies = {s["messages"][-1]["content"] for s in samples}
    # olena answers only in odd (Ukrainian) conversations; her exact text survives (no normalisation)
    assert "Їду до Львова, на каву й до бабусі ґречно вклонитися. #1" in replies
    assert not any("bob says" in r or "tired" in r for r in replies)
    tok = load_tokenizer(out / "tokenizer")
    for q, a in UK:
        for text in (q, a):
            assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    # Context column opens the first question of a session
    first = next(s for s in samples if s["id"].endswith(":0:1"))
    assert first["messages"][0]["content"].startswith("(met in a chat room)\n")


def test_csv_sessions_split_at_gap(tmp_path):
    rows = csv_rows()
    out = prepare(tmp_path, "csv", write_csv(tmp_path / "log.csv", rows), "data.persona=sam",
                  "data.session_gap_seconds=3600", "data.max_context_turns=20")
    by_conv = {}
    for s in all_samples(out):
        by_conv.setdefault(s["conversation_id"], []).append(s)
    # conv0 has a 2-hour gap before its third exchange: the reply after it sees no earlier turns
    conv0 = by_conv["conv0"]
    assert {s["session"] for s in conv0} == {0, 1}
    after_gap = [s for s in conv0 if s["session"] == 1]
    assert after_gap and all(not any("hey there" in m["content"] for m in s["messages"]) for s in after_gap)


def test_csv_without_optional_columns(tmp_path):
    rows = [("", q, a, 10 if i else 99999, ) for i, (q, a) in enumerate(EN * 4)]
    path = write_csv(tmp_path / "plain.csv", rows, header=("Context", "question", "answer", "time_diff_seconds"))
    out = prepare(tmp_path, "csv", path, "data.session_gap_seconds=100000")
    m = read_manifest(out)
    assert m["persona"] == "persona"
    # 12 replies; once the 8-turn context window is full the periodic log repeats exact samples: removed
    n = sum(v["samples"] for v in m["splits"].values())
    assert m["counts"]["duplicates_removed"] > 0 and n + m["counts"]["duplicates_removed"] == 12


def jsonl_lines(n=10):
    lines = []
    for c in range(n):
        pairs = UK if c % 2 else EN
        msgs = [{"role": "system", "content": "Будь собою."}]
        t = 1_700_000_000 + c * 100_000
        for i, (q, a) in enumerate(pairs):
            t += 10 if i != 2 else 10_000
            msgs.append({"role": "user", "content": q, "timestamp": t})
            msgs.append({"role": "assistant", "content": f"{a} [{c}]", "timestamp": t + 5})
        lines.append(json.dumps({"id": f"c{c}", "messages": msgs}, ensure_ascii=False))
    return lines


def test_jsonl_with_timestamps_and_system(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(jsonl_lines()) + "\n", encoding="utf-8")
    out = prepare(tmp_path, "jsonl", path, "data.session_gap_seconds=3600")
    m = read_manifest(out)
    assert m["persona"] == "assistant"
    samples = all_samples(out)
    assert all(s["messages"][0] == {"role": "system", "content": "Будь собою."} for s in samples)
    assert {s["session"] for s in samples} == {0, 1}  # the 10,000 s gap splits every conversation
    assert any("😅" in s["messages"][-1]["content"] for s in samples)
    # the configured system prompt wins over the file's
    out2 = prepare(tmp_path, "jsonl", path, "data.system_prompt=Hi", name="out2")
    assert all(s["messages"][0]["content"] == "Hi" for s in all_samples(out2))


def test_max_length_drops_oldest_context_keeps_system(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join(jsonl_lines()) + "\n", encoding="utf-8")
    long_out = prepare(tmp_path, "jsonl", path, "data.session_gap_seconds=1e9", name="long")
    short_out = prepare(tmp_path, "jsonl", path, "data.session_gap_seconds=1e9", "data.max_length=60", name="short")
    longest = max(len(s["messages"]) for s in all_samples(long_out))
    short = all_samples(short_out)
    assert max(len(s["messages"]) for s in short) < longest
    assert all(s["messages"][0]["role"] == "system" and s["messages"][1]["role"] == "user" for s in short)
    assert read_manifest(short_out)["splits"]["train"]["length"]["max"] <= 60


def test_unknown_persona_lists_speakers(tmp_path):
    path = write_csv(tmp_path / "log.csv", csv_rows())
    proc = personagpt("data", "prepare", "data.format=csv", f"data.path={path}", "data.persona=zed",
                      "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "data.persona: unknown persona 'zed'" in proc.stderr and "bob" in proc.stderr
    assert not (tmp_path / "o").exists()
