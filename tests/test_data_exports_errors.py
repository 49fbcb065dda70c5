"""Malformed chat exports: an error naming the file and the line or message id (never the message text),
exit code 2, and nothing written."""

import json

import pytest

from fixtures.artifacts import ROOT, personagpt

EXPORTS = ROOT / "tests" / "fixtures" / "exports"


def prepare_fails(tmp_path, fmt, path, *overrides):
    out = tmp_path / "out"
    proc = personagpt("data", "prepare", f"data.format={fmt}", f"data.path={path}", "model.vocab_size=300",
                      *overrides, "--out", str(out), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]
    assert str(path) in proc.stderr
    return proc.stderr


def write(tmp_path, name, content: str):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


TG_MESSAGE = {"id": 7, "type": "message", "date": "2024-03-01T11:00:00", "date_unixtime": "1709283600",
              "from": "Olena", "from_id": "user1", "text": "секретний текст", "text_entities": []}


@pytest.mark.parametrize("content, expected", [
    (json.dumps({"name": "x", "id": 1, "messages": [TG_MESSAGE]}, ensure_ascii=False)[:-30],
     "line 1: column "),  # truncated file
    ('{"name": "x", "messages": [}', "line 1: column 28: invalid JSON"),
    ('{"about": "nothing here"}', "not a Telegram export"),
    (json.dumps({"id": 1, "messages": [{**TG_MESSAGE, "date_unixtime": None, "date": "yesterday"}]}),
     "chat 1: message id 7: key date: not a date"),
    (json.dumps({"id": 1, "messages": [{**TG_MESSAGE, "date_unixtime": "soon"}]}),
     "message id 7: key date_unixtime: not epoch seconds"),
    (json.dumps({"id": 1, "messages": [{**TG_MESSAGE, "text": 5}]}), "message id 7: key text: expected a string"),
    (json.dumps({"id": 1, "messages": [{**TG_MESSAGE, "text": ["ok", 3]}]}), "message id 7: key text[1]"),
    (json.dumps({"chats": {"list": [{"id": 9, "messages": [{**TG_MESSAGE, "type": None}]}]}}),
     "chats.list[0] (chat 9): message id 7: key type: missing"),
])
def test_telegram_errors(tmp_path, content, expected):
    err = prepare_fails(tmp_path, "telegram", write(tmp_path, "result.json", content))
    assert expected in err and "секретний" not in err


def test_telegram_truncated_says_so(tmp_path):
    full = (EXPORTS / "telegram_chat.json").read_text(encoding="utf-8")
    err = prepare_fails(tmp_path, "telegram", write(tmp_path, "result.json", full[: len(full) // 2]))
    assert "invalid JSON" in err and "(truncated file?)" in err


@pytest.mark.parametrize("content, expected", [
    ("3/1/24, 9:00 AM - Olena: секретний текст\n3/1/24, 9:0", "line 2: malformed message header (truncated line"),
    ("[01.03.24, 09:00:00] Olena: секретний текст\n[01.03.24, 09:01", "line 2: malformed message header"),
    ("просто текст, не експорт\n", "line 1: not a WhatsApp chat export"),
    ("3/1/24, 13:05 PM - Olena: секретний текст\n", "line 1: unknown date format '3/1/24' 13:05 PM"),
    ("13/13/24, 10:05 - Olena: секретний текст\n", "line 1: unknown date format '13/13/24'"),
    ("", "empty file"),
])
def test_whatsapp_errors(tmp_path, content, expected):
    err = prepare_fails(tmp_path, "whatsapp", write(tmp_path, "chat.txt", content))
    assert expected in err and "секретний" not in err


def test_whatsapp_date_order_that_the_file_contradicts(tmp_path):
    path = EXPORTS / "whatsapp_ios.txt"
    err = prepare_fails(tmp_path, "whatsapp", path, "data.export.date_order=month_first")
    assert "line 10: unknown date format '13.03.24'" in err and "read month-first" in err


DC_MESSAGE = {"id": "55", "type": "Default", "timestamp": "2024-03-01T09:00:00+00:00", "content": "секретний текст",
              "author": {"id": "1", "name": "olena", "nickname": None, "isBot": False}, "attachments": []}


@pytest.mark.parametrize("content, expected", [
    (json.dumps({"guild": {}, "channel": {"id": "1"}, "messages": [DC_MESSAGE]})[:-5], "invalid JSON"),
    (json.dumps([DC_MESSAGE]), "not a DiscordChatExporter JSON export"),
    (json.dumps({"messages": [{**DC_MESSAGE, "timestamp": "1 March"}]}),
     "message id 55: key timestamp: not an ISO-8601 time"),
    (json.dumps({"messages": [{**DC_MESSAGE, "author": None}]}), "message id 55: key author"),
    (json.dumps({"messages": [{**DC_MESSAGE, "content": None}]}), "message id 55: key content: must be a string"),
    (json.dumps({"messages": [{k: v for k, v in DC_MESSAGE.items() if k != "type"}]}), "message id 55: key type"),
])
def test_discord_errors(tmp_path, content, expected):
    err = prepare_fails(tmp_path, "discord", write(tmp_path, "channel.json", content))
    assert expected in err and "секретний" not in err


def test_export_path_required_and_bad_options(tmp_path):
    proc = personagpt("data", "prepare", "data.format=telegram", "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "data.path is required when data.format is telegram" in proc.stderr
    proc = personagpt("config", "show", "data.export.media_placeholder=<{type}>", check=False)
    assert proc.returncode == 2 and "data.export.media_placeholder" in proc.stderr
    proc = personagpt("config", "show", "data.phone_regions=[XX]", check=False)
    assert proc.returncode == 2 and "data.phone_regions" in proc.stderr and "XX" in proc.stderr
    proc = personagpt("config", "show", "data.scrub=[ssn]", check=False)
    assert proc.returncode == 2 and "data.scrub" in proc.stderr
