"""WhatsApp's "Export chat" ``.txt`` (a chat -> More -> Export chat -> Without media), Android and iOS forms:

    12/24/19, 11:23 - Name: text              Android (24-hour, or "11:23 PM", "11:23 p.m.", "11:23 a. m.")
    [10.24.21, 15:21:43] Name: text           iOS (seconds; the date order is the phone's locale)

- A line that is not a message header continues the previous message (multi-line messages).
- Day-first or month-first is inferred from the whole file, as whatsapp-chat-parser does: a first number above 12
  means day-first, a second above 12 month-first; else the number that decreases within a year is the day; else
  the one that changes more often; else day-first (``data.export.date_order`` overrides). The year is the longest
  number (2-digit years are 20YY). Times have no zone: they are read as UTC (gaps are what matter).
- System lines are dropped: lines without an author (Android: "Messages and calls are end-to-end encrypted",
  "X added Y") and iOS's, whose text starts with U+200E after the group's name. "This message was deleted" too.
- Invisible marks (U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) are removed; no-break spaces become spaces.
- Media: ``<Media omitted>``, ``image omitted``, ``video omitted``... (iOS), ``<attached: 00000012-PHOTO-....jpg>``,
  ``IMG-20211024-WA0001.jpg (file attached)``: ``data.export.media_placeholder`` (a caption is kept).
- A sender name may contain ": " or " - ": the authors are the fewest names that explain every line (each line's
  candidates are its text up to each ": "; the candidate explaining most lines is taken first, the longer on a
  tie), and each line's author is its longest such name.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import re
from pathlib import Path

from personagpt.config.data import ExportConfig
from personagpt.data.exports.common import ChatBuilder, media_text, sticker_text
from personagpt.data.readers import read_text
from personagpt.data.types import Source
from personagpt.errors import DataError

MARKS = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
SPACES = re.compile("[\u00a0\u202f\u2007\u2009]")
SYSTEM_MARK = "\x00"  # stands for a U+200E right after ": " (iOS system messages) while the line is parsed
DATE = r"\d{1,4}[-/.] ?\d{1,4}[-/.] ?\d{1,4}\.?"
TIME = r"\d{1,2}[.:]\d{2}(?:[.:]\d{2})?"
AMPM = r"[ap]\.? ?m\.?"
IOS = re.compile(rf"^\[({DATE}),? ({TIME})(?: ?({AMPM}))?\] (.*)$", re.I | re.S)
ANDROID = re.compile(rf"^({DATE}),? ({TIME})(?: ?({AMPM}))? [-–] (.*)$", re.I | re.S)
HEADER_START = re.compile(rf"^\[?{DATE},? \d{{1,2}}[.:]\d")
SPLIT_DATE = re.compile(r"[-/.] ?")
OMITTED = re.compile(r"^(?:<media omitted>|(?:.* )?(image|video|audio|sticker|gif|document|contact card) omitted)$",
                     re.I)
ATTACHED = re.compile(r"^<attached: ([^>]+)>$")
FILE_ATTACHED = re.compile(r"^(\S.*) \(file attached\)$")
DELETED = re.compile(r"^(this message was deleted|you deleted this message)\.?$", re.I)
EDITED = re.compile(r"\s*<this message was edited>$", re.I)
OMITTED_KIND = {"image": "photo", "video": "video", "audio": "audio", "sticker": "sticker", "gif": "gif",
                "document": "file", "contact card": "contact"}
FILE_KIND = (("PHOTO", "photo"), ("IMG", "photo"), ("VIDEO", "video"), ("VID", "video"), ("PTT", "voice"),
             ("AUDIO", "audio"), ("AUD", "audio"), ("STICKER", "sticker"), ("STK", "sticker"), ("GIF", "gif"))


def file_kind(name: str) -> str:
    upper = name.upper()
    for token, kind in FILE_KIND:
        if re.search(rf"(^|[-_]){token}([-_.]|$)", upper):
            return kind
    return "file"


def _date_numbers(date: str) -> list[int]:
    parts = [p for p in SPLIT_DATE.split(date.rstrip(".")) if p]
    longest = max(parts, key=len)
    if len(longest) > 2:  # a 4-digit year goes last (2024-03-14 -> 03 14 2024); the others keep their order
        parts.remove(longest)
        parts.append(longest)
    return [int(p) for p in parts]


def days_first(dates: list[list[int]]) -> bool | None:
    """whatsapp-chat-parser's inference over the distinct dates of a file, in order of appearance."""
    if any(d[0] > 12 for d in dates):
        return True
    if any(d[1] > 12 for d in dates):
        return False
    by_year: dict[int, list[list[int]]] = collections.defaultdict(list)
    for d in dates:
        by_year[d[2]].append(d)
    results = []
    for ds in by_year.values():
        if any(b[0] < a[0] for a, b in itertools.pairwise(ds)):
            results.append(True)
        elif any(b[1] < a[1] for a, b in itertools.pairwise(ds)):
            results.append(False)
    if True in results:
        return True
    if False in results:
        return False
    first = sum(abs(b[0] - a[0]) for a, b in itertools.pairwise(dates))
    second = sum(abs(b[1] - a[1]) for a, b in itertools.pairwise(dates))
    return True if first > second else False if first < second else None


def _clock(time: str, ampm: str | None) -> tuple[int, int, int]:
    parts = [int(p) for p in re.split(r"[.:]", time)]
    h, m, s = parts[0], parts[1], parts[2] if len(parts) > 2 else 0
    if ampm:
        if not 1 <= h <= 12:
            raise ValueError(time)
        pm = re.sub(r"[^apm]", "", ampm.lower()) == "pm"
        h = (0 if h == 12 else h) + (12 if pm else 0)
    return h, m, s


def choose_authors(candidates: list[list[str]]) -> set[str]:
    """The fewest names that explain every line: greedily the candidate covering most uncovered lines (longer on
    a tie). ``candidates[i]``: line i's possible authors (its text up to each ": ")."""
    uncovered = set(range(len(candidates)))
    by_name: dict[str, set[int]] = collections.defaultdict(set)
    for i, cands in enumerate(candidates):
        for c in cands:
            by_name[c].add(i)
    chosen: set[str] = set()
    while uncovered:
        name = max(by_name, key=lambda n: (len(by_name[n] & uncovered), len(n), n))
        chosen.add(name)
        uncovered -= by_name.pop(name)
    return chosen


def _media(first_line: str, opts: ExportConfig) -> tuple[bool, str | None]:
    """(is it a media line, its text) for the first line of a message."""
    m = OMITTED.match(first_line)
    if m:
        kind = OMITTED_KIND[m.group(1).lower()] if m.group(1) else "media"
        return True, sticker_text(None, opts) if kind == "sticker" else media_text(kind, opts)
    m = ATTACHED.match(first_line) or FILE_ATTACHED.match(first_line)
    if m:
        kind = file_kind(m.group(1))
        return True, sticker_text(None, opts) if kind == "sticker" else media_text(kind, opts)
    return False, None


def read_whatsapp(path: str | Path, opts: ExportConfig) -> Source:
    path = Path(path)
    raw_lines = read_text(path).splitlines()
    # (line number, date, time, ampm, rest) per message; continuation lines appended to rest
    messages: list[list] = []
    for n, raw in enumerate(raw_lines, start=1):
        line = MARKS.sub("", SPACES.sub(" ", raw.replace(": \u200e", ": " + SYSTEM_MARK)))
        m = IOS.match(line) or ANDROID.match(line)
        if m:
            messages.append([n, m.group(1), m.group(2), m.group(3), m.group(4)])
        elif HEADER_START.match(line):
            raise DataError(f"{path}: line {n}: malformed message header (truncated line, or an unknown date/time "
                            "format; expected 'DATE, TIME - NAME: TEXT' or '[DATE, TIME] NAME: TEXT')")
        elif messages:
            messages[-1][4] += "\n" + line
        elif line.strip():
            raise DataError(f"{path}: line {n}: not a WhatsApp chat export: no message header (expected "
                            "'DATE, TIME - NAME: TEXT' (Android) or '[DATE, TIME] NAME: TEXT' (iOS))")
    if not messages:
        raise DataError(f"{path}: empty file (no WhatsApp messages)")

    if opts.date_order == "auto":
        distinct = list(dict.fromkeys(msg[1] for msg in messages))
        order = days_first([_date_numbers(d) for d in distinct])
        dayfirst = order is not False
    else:
        order = dayfirst = opts.date_order == "day_first"

    header_of = [msg[4].split("\n", 1)[0] for msg in messages]
    cands = [[h[:i] for i in range(len(h)) if h.startswith(": ", i) and i > 0] for h in header_of]
    authors = choose_authors([c for c in cands if c])

    dropped: collections.Counter = collections.Counter()
    b = ChatBuilder(f"whatsapp:{path.stem}", dropped)
    for (n, date, time, ampm, rest), cs in zip(messages, cands, strict=True):
        nums = _date_numbers(date)
        day, month, year = (nums[0], nums[1], nums[2]) if dayfirst else (nums[1], nums[0], nums[2])
        try:
            h, mi, s = _clock(time, ampm)
            when = dt.datetime(year + 2000 if year < 100 else year, month, day, h, mi, s, tzinfo=dt.timezone.utc)
        except ValueError:
            inferred = ("day-first" if dayfirst else "month-first") + (" (inferred from the whole file)"
                                                                       if opts.date_order == "auto" else "")
            raise DataError(f"{path}: line {n}: unknown date format {date.strip()!r} {time}{' ' + ampm if ampm else ''}"
                            f" (read {inferred})") from None
        names = [c for c in cs if c in authors]
        if not names:
            b.drop("system")
            continue
        author = max(names, key=len)
        text = rest[len(author) + 2:]
        system = text.startswith(SYSTEM_MARK)
        text = EDITED.sub("", text.replace(SYSTEM_MARK, ""))
        first, _, more = text.partition("\n")
        is_media, placeholder = _media(first.strip(), opts)
        if system and not is_media:
            b.drop("system")
            continue
        if DELETED.match(text.strip()):
            b.drop("deleted")
            continue
        parts = [placeholder, more] if is_media else [text]
        b.add(author.strip(), parts, when.timestamp(), False, opts)
    stats = {"dropped": dict(sorted(dropped.items())), "per_session_conversations": True,
             "date_order": "day-first" if dayfirst else "month-first",
             "date_order_source": opts.date_order if opts.date_order != "auto" else
             ("inferred" if order is not None else "default (undecidable)")}
    return Source(name=f"whatsapp:{path}", conversations=[b.conv] if b.conv.turns else [], stats=stats)
