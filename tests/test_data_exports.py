"""Chat exports (Telegram, WhatsApp, Discord) into turns, speakers, timestamps and sessions; persona by id or name.

The fixtures (tests/fixtures/exports/) are synthetic exports written from the formats' published descriptions;
each plants one of every pitfall the readers handle."""

import datetime as dt
import json
import shutil

import pytest

from fixtures.artifacts import ROOT, personagpt
from personagpt.config.data import ExportConfig
from personagpt.data.exports.whatsapp import choose_authors, days_first
from personagpt.data.readers import read_source
from personagpt.data.samples import choose_persona
from personagpt.errors import DataError

EXPORTS = ROOT / "tests" / "fixtures" / "exports"
TG_CHAT, TG_ACCOUNT = EXPORTS / "telegram_chat.json", EXPORTS / "telegram_account.json"
WA_ANDROID, WA_IOS = EXPORTS / "whatsapp_android.txt", EXPORTS / "whatsapp_ios.txt"
WA_ES = EXPORTS / "whatsapp_android_es.txt"
DISCORD = EXPORTS / "discord_channel.json"
OLENA_DC, SAM_DC = "434468647994523650", "434468647994523651"


def utc(*args) -> float:
    return dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp()


def turns(source):
    return [t for c in source.conversations for t in c.turns]


def texts(source):
    return [t.text for t in turns(source)]


def read(fmt, path, **opts):
    return read_source(fmt, path, ExportConfig(**opts))


# --- Telegram -----------------------------------------------------------------------------------------------------

def test_telegram_single_chat():
    s = read("telegram", TG_CHAT)
    assert [c.id for c in s.conversations] == ["telegram:2002"]
    assert s.names == {"user1001": "Olena Koval", "user1002": "Sam Brooks", "user1003": "Deleted Account"}
    assert s.stats["dropped"] == {"service": 2}  # a phone call and a pin
    ts = turns(s)
    assert {t.speaker for t in ts} == {"user1001", "user1002", "user1003"}  # from_id, prefixed; from null kept
    # date_unixtime (UTC) wins over date (local time, here UTC+2)
    assert ts[0].time == 1709283640 == utc(2024, 3, 1, 9, 0, 40) and ts[0].gap == 0
    assert ts[1].gap == ts[1].time - ts[0].time == 47
    # text as a list of strings and entities; a text_link's hidden href is not kept
    assert ("Мій новий номер +380 67 123 45 67, пошта olena.koval@example.com і сайт "
            "https://example.org/olena?ref=chat не губи!") in texts(s)
    assert "ось тут подивись" in texts(s) and not any("secret.example.com" in t for t in texts(s))
    assert "👍" in texts(s)  # sticker_emoji
    assert "<photo> the venue, call (415) 555-0132 if lost" in texts(s)  # media placeholder, caption kept
    assert "<voice>" in texts(s)
    assert "[forwarded] Зустріч клубу в четвер о 19:00" in texts(s)
    # a message with only `date` (local, no zone) is read as UTC
    no_unix = next(t for t in ts if t.text.startswith("(це повідомлення без date_unixtime)"))
    assert no_unix.time == utc(2024, 3, 5, 11, 3, 37)
    assert any("😄" in t for t in texts(s)) and any("Львів" in t for t in texts(s))


def test_telegram_options():
    s = read("telegram", TG_CHAT, forwarded="drop", media="drop", stickers="placeholder",
             media_placeholder="[{kind}]")
    assert not any("Зустріч клубу" in t for t in texts(s)) and s.stats["dropped"]["forwarded"] == 1
    assert "the venue, call (415) 555-0132 if lost" in texts(s)  # caption kept, photo gone
    assert "[voice]" not in texts(s) and s.stats["dropped"]["empty_or_media_only"] == 1
    assert "[sticker]" in texts(s) and "👍" not in texts(s)
    kept = read("telegram", TG_CHAT, forwarded="keep", media_placeholder="[{kind}]")
    assert "Зустріч клубу в четвер о 19:00" in texts(kept) and "[voice]" in texts(kept)


def test_telegram_account_export():
    s = read("telegram", TG_ACCOUNT)
    # chats.list and left_chats.list; personal_information is never read
    assert [c.id for c in s.conversations] == ["telegram:2002", "telegram:3003", "telegram:1001", "telegram:4004"]
    assert s.stats["dropped"] == {"service": 1}
    assert not any("111 22 33" in t for t in texts(s))
    assert "Я! 🎉" in texts(s)
    for given in ("Olena Koval", "olena koval", "1001", "user1001"):
        assert choose_persona(s, given) == "user1001", given
    assert choose_persona(s, "Bohdan") == "user1004"
    with pytest.raises(DataError, match="unknown persona 'Taras'.*user1001 'Olena Koval'"):
        choose_persona(s, "Taras")


def test_persona_display_name_ambiguous(tmp_path):
    chat = json.loads(TG_CHAT.read_text())
    for m in chat["messages"]:
        if m.get("from") == "Sam Brooks":
            m["from"] = "Olena Koval"  # two speakers, one display name
    path = tmp_path / "result.json"
    path.write_text(json.dumps(chat, ensure_ascii=False))
    with pytest.raises(DataError, match="'Olena Koval' is ambiguous.*user1001, user1002"):
        choose_persona(read("telegram", path), "Olena Koval")


def test_inspect_lists_speakers_dates_sessions():
    proc = personagpt("data", "inspect", "--json", "data.format=telegram", f"data.path={TG_CHAT}",
                      "data.session_gap_seconds=3600")
    summary = json.loads(proc.stdout)
    assert [(s["id"], s["name"], s["messages"]) for s in summary["speakers"]] == [
        ("user1001", "Olena Koval", 30), ("user1002", "Sam Brooks", 27), ("user1003", "Deleted Account", 1)]
    # 12 days of chat, and one message whose local `date` lands 2 hours after its session: 13 sessions
    assert summary["sessions"] == 13 and summary["speakers"][0]["sessions"] == 13
    assert (summary["first"], summary["last"]) == ("2024-03-01 09:00", "2024-03-12 09:03")
    assert summary["dropped"] == {"service": 2}
    table = personagpt("data", "inspect", "data.format=telegram", f"data.path={TG_CHAT}").stdout
    assert "Olena Koval" in table and "user1003" in table and "13 sessions" in table
    assert "Привіт" not in table  # no message text


# --- WhatsApp -----------------------------------------------------------------------------------------------------

def test_whatsapp_android_month_first_12h():
    s = read("whatsapp", WA_ANDROID)
    assert s.stats["date_order"] == "month-first" and s.stats["date_order_source"] == "inferred"
    assert s.stats["dropped"] == {"deleted": 1, "system": 3}  # encryption notice, created group, added
    ts = turns(s)
    # names with " - " and ": " (the text itself may hold ": ")
    assert [t.speaker for t in ts[:3]] == ["Sam - Work", "Olena", "Dr: Bo"]
    assert ts[2].text == "I'm in too: bringing snacks" and ts[-2].text == "ha: nice"
    assert ts[1].text == "yes 🙌\nbut I might be late\nlike 20 minutes"  # multi-line message
    assert ts[0].time == utc(2024, 3, 1, 9, 2)
    assert ts[3].text == "<media>"  # <Media omitted>
    by_text = {t.text: t for t in ts}
    assert by_text["can't sleep, where exactly do we meet?"].time == utc(2024, 3, 2, 0, 5)  # 12:05 AM
    assert by_text["the café at https://example.org/cafe?ref=wa - see you there"].time == utc(2024, 3, 2, 12, 16)
    assert "ok" in by_text  # "<This message was edited>" removed
    assert by_text["<photo> the pie itself"].time == utc(2024, 3, 14, 20, 33)  # IMG-... (file attached) + caption


def test_whatsapp_ios_day_first_marks_and_system():
    s = read("whatsapp", WA_IOS)
    assert s.stats["date_order"] == "day-first"
    assert s.stats["dropped"] == {"system": 2}  # iOS system lines: U+200E after the group's name
    ts = turns(s)
    assert {t.speaker for t in ts} == {"Bohdan", "Olena Koval"}
    assert [t.text for t in ts[2:4]] == ["<photo>", "<photo>"]  # image omitted, <attached: ...-PHOTO-...>
    assert "Мій номер +380 67 123 45 67, пиши" in texts(s)  # U+202A/U+202C around the number removed
    assert not any(ch in t for t in texts(s) for ch in "\u200e\u202a\u202c")
    assert ts[1].text == "Привіт! Як ви?\nЯ щойно з роботи"
    assert ts[-2].text == "<sticker>" and ts[-1].time == utc(2024, 3, 13, 10, 1)


def test_whatsapp_spanish_ampm_day_first():
    s = read("whatsapp", WA_ES)
    ts = turns(s)
    assert s.stats["date_order"] == "day-first"
    assert ts[0].time == utc(2024, 3, 14, 21, 5)  # 9:05 p. m.
    assert ts[3].time == utc(2024, 3, 15, 0, 1)  # 12:01 a. m.
    assert ts[3].gap == ts[3].time - ts[2].time


def test_whatsapp_dotted_pm_and_24h_android(tmp_path):
    path = tmp_path / "chat.txt"
    path.write_text("12/24/19, 11:23 p.m. - Ann: hi\n12/24/19, 11:24 p.m. - Bo: yo\n", encoding="utf-8")
    assert [t.time for t in turns(read("whatsapp", path))] == [utc(2019, 12, 24, 23, 23), utc(2019, 12, 24, 23, 24)]
    path.write_text("24/12/2019, 23:23 - Ann: hi\n24/12/2019, 23:24 - Bo: yo\n", encoding="utf-8")
    assert [t.time for t in turns(read("whatsapp", path))] == [utc(2019, 12, 24, 23, 23), utc(2019, 12, 24, 23, 24)]


def test_whatsapp_date_order_inference_rules():
    assert days_first([[13, 1, 2024]]) is True and days_first([[1, 13, 2024]]) is False  # above 12
    assert days_first([[5, 1, 24], [6, 1, 24], [1, 2, 24]]) is True  # the day decreases within a year
    assert days_first([[1, 5, 24], [1, 6, 24], [2, 1, 24]]) is False
    assert days_first([[1, 1, 24], [1, 1, 24]]) is None  # undecidable: read day-first
    # an override that contradicts the file: the date that cannot be read is named
    with pytest.raises(DataError, match=r"whatsapp_ios.txt: line 10: unknown date format '13.03.24'"):
        read("whatsapp", WA_IOS, date_order="month_first")


def test_whatsapp_author_names_with_colons():
    # "Dr: Who" always writes "Dr: Who: ...", so "Dr: Who" explains as many lines as "Dr" and is longer
    assert choose_authors([["Dr", "Dr: Who"], ["Dr", "Dr: Who", "Dr: Who: hi"], ["Bob"]]) == {"Dr: Who", "Bob"}
    # a speaker who once writes "re: ..." stays "Bob"
    assert choose_authors([["Bob", "Bob: re"], ["Bob"], ["Bob"]]) == {"Bob"}


# --- Discord ------------------------------------------------------------------------------------------------------

def test_discord_channel():
    s = read("discord", DISCORD)
    assert [c.id for c in s.conversations] == ["discord:897616348878872660"]
    assert s.stats["dropped"] == {"bot": 1, "other_type": 3}  # GuildMemberJoin, ChannelPinnedMessage, Call
    assert s.names == {SAM_DC: "sam.b", OLENA_DC: "Олена"}  # nickname, else name
    ts = turns(s)
    assert [t.speaker for t in ts[:2]] == [SAM_DC, OLENA_DC]
    assert ts[1].text == "дякую! радий бути тут"  # a Reply is a message
    assert ts[2].text == "<photo> here's my setup" and ts[2].time == utc(2024, 3, 1, 9, 3)  # +02:00 offset
    assert ts[3].text == "<sticker>" and ts[3].time == utc(2024, 3, 1, 9, 4)  # Z
    assert not any("Sam got a new role" in t for t in texts(s))
    assert choose_persona(s, "Олена") == choose_persona(s, OLENA_DC) == OLENA_DC
    assert choose_persona(s, "sam.b") == SAM_DC


def test_discord_folder_of_channels(tmp_path):
    shutil.copy(DISCORD, tmp_path / "general.json")
    other = json.loads(DISCORD.read_text())
    other["channel"]["id"] = "42"
    (tmp_path / "random.json").write_text(json.dumps(other, ensure_ascii=False))
    s = read("discord", tmp_path)
    assert [c.id for c in s.conversations] == ["discord:897616348878872660", "discord:42"]


# --- through data prepare: sessions become the unit of the split ------------------------------------------------

def test_prepare_telegram_sessions_and_persona(tmp_path):
    out = tmp_path / "data"
    personagpt("data", "prepare", "--config", str(ROOT / "configs" / "tiny.yaml"), "data.format=telegram",
               f"data.path={TG_CHAT}", "data.persona=Olena Koval", "model.vocab_size=400", "--out", str(out))
    m = json.loads((out / "manifest.json").read_text())
    assert m["persona"] == "user1001" and m["persona_name"] == "Olena Koval"
    assert m["counts"]["dropped"] == {"service": 2}
    samples = [json.loads(line) for split in ("train", "val", "test")
               for line in (out / f"{split}.jsonl").read_text().splitlines()]
    convs = {s["conversation_id"] for s in samples}
    # one chat, split by session: ids are the chat and the session's start time
    assert all(c.startswith("telegram:2002@") for c in convs) and len(convs) >= 10
    assert m["splits"]["val"]["samples"] > 0 and m["splits"]["test"]["samples"] > 0
    assert all(s["session"] == 0 for s in samples)
    replies = {s["messages"][-1]["content"] for s in samples}
    assert "«Інтернат» Жадана, дуже раджу 📚" in replies and "Запишу собі" not in replies
