"""Bad input: a clear error naming file, row/line and column/key, exit code 2, and no artifact left behind."""

import json

import pytest

from fixtures.artifacts import personagpt

HEADER = "Context,question,answer,time_diff_seconds\n"


def run_prepare(tmp_path, fmt, content: bytes | str, *overrides):
    path = tmp_path / f"input.{fmt}"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    out = tmp_path / "out"
    proc = personagpt("data", "prepare", f"data.format={fmt}", f"data.path={path}", "model.vocab_size=300",
                      *overrides, "--out", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    assert not out.exists(), "a failed prepare must not leave an artifact"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")], "temp folder left behind"
    assert "Traceback" not in proc.stderr
    return proc.stderr, str(path)


@pytest.mark.parametrize("content, expected", [
    (HEADER + ",hi,hello,5\n,how are you,fine,abc\n", "row 3: column time_diff_seconds: not a number: 'abc'"),
    (HEADER + ",hi,hello,-5\n", "row 2: column time_diff_seconds: must be a finite number >= 0"),
    (HEADER + ",hi,hello,nan\n", "row 2: column time_diff_seconds"),
    (HEADER + ",hi,hello,5,extra\n", "row 2: expected 4 fields, got 5"),
    ("Context,question,time_diff_seconds\n,hi,5\n", "missing column(s) answer"),
    ("", "empty file"),
    (HEADER + ',hi,"unterminated,5\n', "malformed CSV"),
    ("Context,question,answer,time_diff_seconds,conversation_id\n,hi,yo,5,\n", "row 2: column conversation_id: empty"),
])
def test_csv_errors(tmp_path, content, expected):
    err, path = run_prepare(tmp_path, "csv", content)
    assert expected in err and path in err


def test_invalid_utf8_names_line(tmp_path):
    content = (HEADER + ",hi,hello,5\n").encode() + b",caf\xe9,ok,5\n"
    err, path = run_prepare(tmp_path, "csv", content)
    assert f"{path}: line 3: invalid UTF-8" in err


@pytest.mark.parametrize("line, expected", [
    ('{"messages": [{"role": "user", "content": "hi"}', "line 2: invalid JSON"),
    ('{"msgs": []}', "line 2: key messages"),
    ('{"messages": [{"role": "robot", "content": "hi"}]}', "line 2: messages[0]: key role"),
    ('{"messages": [{"role": "user", "content": 5}]}', "line 2: messages[0]: key content: must be a string"),
    ('{"messages": [{"role": "user", "content": "a", "timestamp": "yesterday"}]}', "messages[0]: key timestamp"),
    ('{"messages": [{"role": "user", "content": "a", "time_diff_seconds": -3}]}', "key time_diff_seconds"),
])
def test_jsonl_errors(tmp_path, line, expected):
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    err, path = run_prepare(tmp_path, "jsonl", good + "\n" + line + "\n")
    assert expected in err and path in err


def test_unknown_persona(tmp_path):
    err, _ = run_prepare(tmp_path, "csv", HEADER + ",hi,hello,5\n", "data.persona=nobody")
    assert "data.persona: unknown persona 'nobody'" in err


def test_empty_after_filtering(tmp_path):
    # every answer is shorter than min_answer_chars -> nothing to train on
    err, path = run_prepare(tmp_path, "csv", HEADER + ",hi,ok,5\n,yo,k,5\n", "data.min_answer_chars=50")
    assert "no training samples left after filtering" in err


def test_missing_input_file(tmp_path):
    out = tmp_path / "out"
    proc = personagpt("data", "prepare", "data.format=csv", f"data.path={tmp_path}/nope.csv", "--out", str(out),
                      check=False)
    assert proc.returncode == 2 and "nope.csv: input file not found" in proc.stderr and not out.exists()


def test_existing_artifact_untouched_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("previous artifact")
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + ",hi,hello,oops\n")
    proc = personagpt("data", "prepare", "data.format=csv", f"data.path={path}", "--out", str(out), check=False)
    assert proc.returncode == 2 and (out / "keep.txt").read_text() == "previous artifact"
