"""Privacy: phone numbers, e-mail addresses, URLs and card numbers planted in the export fixtures are gone from
everything written (every file of the artifact, and of a whole `personagpt run` folder), the manifest counts them
per kind without their values, and other speakers can be pseudonymised."""

import json
import os
import subprocess
import sys

import pytest

from fixtures.artifacts import ROOT, TINY, personagpt
from personagpt.data.privacy import Scrubber

EXPORTS = ROOT / "tests" / "fixtures" / "exports"
# Every contact detail planted in the fixtures (and the account export's own phone number, which is never read).
PLANTED = ["+380 67 123 45 67", "123 45 67", "(415) 555-0132", "555-0132", "067 765 4321", "765 4321",
           "+44 20 7946 0958", "7946 0958", "+380 50 111 22 33", "111 22 33",
           "olena.koval@example.com", "koval@example", "sam_b+chat@mail.example.org", "mail.example.org",
           "marta.r@example.com",
           "https://example.org/olena?ref=chat", "example.org/olena", "www.example.net/page", "example.net",
           "t.me/olena_private", "olena_private", "https://example.org/cafe?ref=wa", "example.org/cafe",
           "https://example.org/discord-guide", "discord-guide", "secret.example.com", "private-doc",
           "4111 1111 1111 1111", "4111111111111111"]


def leaks(folder) -> list[str]:
    """(file, planted value) for every planted value found in any file under ``folder``, as UTF-8 text or as the
    byte-level BPE spelling of a tokenizer vocabulary (spaces as Ġ)."""
    found = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        text = p.read_bytes().decode("utf-8", errors="ignore")
        for value in PLANTED:
            if value in text or value.replace(" ", "Ġ") in text:
                found.append(f"{p.relative_to(folder)}: {value}")
    return found


def test_scrubber_kinds_and_counts():
    s = Scrubber(("phone", "email", "url", "card"), ("US", "GB", "UA"))
    out = s("Пиши olena.koval@example.com, дзвони +380 67 123 45 67 або (415) 555-0132; "
            "https://example.org/x?q=1, www.example.net і t.me/olena_private; картка 4111 1111 1111 1111 💳")
    assert out == ("Пиши <email>, дзвони <phone> або <phone>; <url>, <url> і <url>; картка <card> 💳")
    assert dict(s.counts) == {"email": 1, "url": 3, "card": 1, "phone": 2}
    # dates, times, prices and short numbers are not personal data
    for text in ("зустріч 12.03.2024 о 19:00", "row 5, 3 tickets for 450 грн", "version 1.2", "12/03/24"):
        assert s(text) == text, text
    # only the kinds asked for
    only_email = Scrubber(("email",))
    assert only_email("a@b.example.org +380 67 123 45 67") == "<email> +380 67 123 45 67"


CASES = [("telegram", "telegram_chat.json", "Olena Koval"), ("telegram", "telegram_account.json", "Olena Koval"),
         ("whatsapp", "whatsapp_android.txt", "Olena"), ("whatsapp", "whatsapp_ios.txt", "Olena Koval"),
         ("whatsapp", "whatsapp_android_es.txt", "Olena"), ("discord", "discord_channel.json", "Олена")]


@pytest.mark.parametrize("fmt, name, persona", CASES, ids=[c[1] for c in CASES])
def test_scrubbed_by_default_everywhere_in_the_artifact(tmp_path, fmt, name, persona):
    out = tmp_path / "data"
    personagpt("data", "prepare", "--config", str(TINY), f"data.format={fmt}", f"data.path={EXPORTS / name}",
               f"data.persona={persona}", "model.vocab_size=400", "data.val_fraction=0", "data.test_fraction=0",
               "--out", str(out))
    assert leaks(out) == []
    m = json.loads((out / "manifest.json").read_text())
    counts = m["privacy"]["scrubbed"]
    assert set(counts) == {"phone", "email", "url", "card"} and sum(counts.values()) > 0
    if name == "telegram_chat.json":  # where scrubbed messages are in the samples (elsewhere they open a session)
        samples = (out / "train.jsonl").read_text(encoding="utf-8")
        assert any(f"<{k}>" in samples for k, n in counts.items() if n)


def test_scrubbing_off_keeps_values(tmp_path):
    # the check above can fail: with data.scrub=[] the planted values are in the samples
    out = tmp_path / "data"
    personagpt("data", "prepare", "--config", str(TINY), "data.format=telegram",
               f"data.path={EXPORTS / 'telegram_chat.json'}", "data.persona=user1001", "data.scrub=[]",
               "model.vocab_size=400", "--out", str(out))
    assert "olena.koval@example.com" in (out / "train.jsonl").read_text(encoding="utf-8") + \
        (out / "val.jsonl").read_text(encoding="utf-8") + (out / "test.jsonl").read_text(encoding="utf-8")
    assert json.loads((out / "manifest.json").read_text())["privacy"]["scrubbed"] == {}


def test_pseudonymize_other_speakers(tmp_path):
    from personagpt.config.data import ExportConfig
    from personagpt.data.privacy import pseudonymize
    from personagpt.data.readers import read_source

    source = read_source("discord", EXPORTS / "discord_channel.json", ExportConfig())
    sam = "434468647994523651"
    assert pseudonymize(source, sam) == 1
    turns = [t for c in source.conversations for t in c.turns]
    assert turns[0].text == "hey Person 1, welcome to the server 👋"  # the other speaker's nickname, in Sam's text
    assert {t.speaker for t in turns} == {sam, "Person 1"} and source.names == {sam: "sam.b", "Person 1": "Person 1"}
    # through data prepare: the manifest says how many, and the other speaker's name is in no file
    out = tmp_path / "data"
    personagpt("data", "prepare", "--config", str(TINY), "data.format=discord",
               f"data.path={EXPORTS / 'discord_channel.json'}", "data.persona=sam.b", "data.pseudonymize=true",
               "model.vocab_size=400", "data.val_fraction=0", "data.test_fraction=0", "--out", str(out))
    m = json.loads((out / "manifest.json").read_text())
    assert m["privacy"]["pseudonymized_speakers"] == 1 and m["persona_name"] == "sam.b"
    assert not any("Олена" in p.read_bytes().decode("utf-8", "ignore") for p in out.rglob("*") if p.is_file())


@pytest.mark.slow
def test_pipeline_on_telegram_export_leaves_no_contact_details(tmp_path):
    """`personagpt run` (data and train stages, the tiny preset) on the Telegram fixture: it completes, and no
    planted value is in any file of the run folder (artifacts, checkpoints, TensorBoard events, logs, report)."""
    proc = subprocess.run(
        [sys.executable, "-m", "personagpt.cli", "run", "--config", str(TINY), "data.format=telegram",
         f"data.path={EXPORTS / 'telegram_chat.json'}", "data.persona=Olena Koval", "model.vocab_size=400",
         "train.max_steps=6", "train.eval_every=3", "train.save_every=3", "train.warmup_steps=1",
         "train.eval_samples=8", "--stages", "data,train"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny"
    state = json.loads((run_dir / "pipeline.json").read_text())
    assert state["data"]["status"] == "done" and state["train"]["status"] == "done"
    teacher = json.loads((run_dir / "teacher" / "manifest.json").read_text())
    assert teacher["kind"] == "model" and teacher["parents"]["dataset"]["content_hash"]
    assert (run_dir / "logs" / "data.log").is_file() and (run_dir / "report.md").is_file()
    assert leaks(run_dir) == []
