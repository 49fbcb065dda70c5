"""Personal data out of the conversations before anything is written (``data.scrub``, ``data.pseudonymize``).

Rules:

- Scrubbing runs on every turn's text (and CSV context) right after the source is read and the persona chosen:
  before the tokenizer is trained, samples are built or anything is written. Each found item becomes a
  placeholder: ``<email>``, ``<url>``, ``<card>``, ``<phone>``. The manifest gets counts per kind, never values.
- Order: e-mail addresses (a regex), then URLs (urlextract: with or without a scheme, bare domains by IANA's TLD
  list, so it errs on the side of removing), then card-like numbers (13-19 digits, spaces or dashes allowed,
  Luhn-valid), then phone numbers (Google's libphonenumber, ``phonenumbers``: international numbers, and national
  formats of ``data.phone_regions``, at its "possible number" leniency: over-removal is preferred; a match shaped
  like a date, 12.03.2024, is kept).
- Pseudonymisation replaces every other speaker's display name (the whole name, and each part of it of 3+
  letters, as whole words, ignoring case) with ``Person N`` (N in order of first appearance) in every text, and
  uses it as their speaker name. Inflected forms of a name (e.g. a Ukrainian vocative) are not recognised.
"""

from __future__ import annotations

import collections
import functools
import re

from personagpt.data.types import Source

PLACEHOLDER = {kind: f"<{kind}>" for kind in ("email", "url", "card", "phone")}
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")
DIGITS = re.compile(r"\d")
DATE_LIKE = re.compile(r"^\d{1,4}([./-])\d{1,2}\1\d{1,4}$")  # 12.03.2024 is a date, not a phone number
TRAILING = ".,;:!?'\"»…"


@functools.lru_cache(maxsize=1)
def _url_extractor():
    from urlextract import URLExtract

    return URLExtract(cache_dns=False)  # no DNS: the list of TLDs it ships is all it needs


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _replace(text: str, spans: list[tuple[int, int]], placeholder: str) -> tuple[str, int]:
    kept: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if kept and s < kept[-1][1]:
            kept[-1] = (kept[-1][0], max(kept[-1][1], e))
        else:
            kept.append((s, e))
    for s, e in reversed(kept):
        text = text[:s] + placeholder + text[e:]
    return text, len(kept)


def _emails(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in EMAIL.finditer(text)]


def _urls(text: str) -> list[tuple[int, int]]:
    if "." not in text and ":" not in text:
        return []
    spans = []
    for _, (start, end) in _url_extractor().find_urls(text, get_indices=True):
        # sentence punctuation after a URL is not part of it (a closing bracket only when unbalanced)
        while end > start and (text[end - 1] in TRAILING or (text[end - 1] == ")" and text.count(
                "(", start, end) < text.count(")", start, end))):
            end -= 1
        spans.append((start, end))
    return spans


def _cards(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in CARD.finditer(text) if _luhn(re.sub(r"\D", "", m.group()))]


def _phones(text: str, regions: tuple[str, ...]) -> list[tuple[int, int]]:
    if len(DIGITS.findall(text)) < 6:
        return []
    import phonenumbers

    spans = []
    for region in regions:
        for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
            if not DATE_LIKE.match(m.raw_string):
                spans.append((m.start, m.end))
    return spans


class Scrubber:
    """Replaces the configured kinds in a text and counts what it replaced."""

    def __init__(self, kinds: tuple[str, ...], phone_regions: tuple[str, ...] = ("US",)):
        self.kinds = tuple(k for k in ("email", "url", "card", "phone") if k in kinds)
        self.regions = tuple(phone_regions)
        self.counts: collections.Counter = collections.Counter({k: 0 for k in self.kinds})

    def __call__(self, text: str) -> str:
        for kind in self.kinds:
            if kind == "phone":
                spans = _phones(text, self.regions)
            else:
                spans = {"email": _emails, "url": _urls, "card": _cards}[kind](text)
            if spans:
                text, n = _replace(text, spans, PLACEHOLDER[kind])
                self.counts[kind] += n
        return text


def scrub(source: Source, kinds: tuple[str, ...], phone_regions: tuple[str, ...]) -> dict[str, int]:
    """Scrub every text of ``source`` in place; the counts per kind."""
    if not kinds:
        return {}
    s = Scrubber(kinds, phone_regions)
    for conv in source.conversations:
        if conv.system:
            conv.system = s(conv.system)
        for t in conv.turns:
            t.text = s(t.text)
            if t.context:
                t.context = s(t.context)
    return dict(s.counts)


def pseudonymize(source: Source, persona: str) -> int:
    """Rename every speaker but ``persona`` to ``Person N`` and replace their names in every text, in place.
    Returns how many speakers were renamed."""
    order: dict[str, str] = {}
    for conv in source.conversations:
        for t in conv.turns:
            if t.speaker != persona and t.speaker not in order:
                order[t.speaker] = f"Person {len(order) + 1}"
    persona_words = {w.casefold() for w in source.names.get(persona, persona).split()}
    words: dict[str, str] = {}
    for speaker, alias in order.items():
        for name in {speaker, source.names.get(speaker, speaker)}:
            words.setdefault(name.casefold(), alias)
            for part in name.split():
                if len(part) >= 3 and part.casefold() not in persona_words:
                    words.setdefault(part.casefold(), alias)
    if words:
        pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
                             + r")(?!\w)", re.IGNORECASE)

        def sub(text: str) -> str:
            return pattern.sub(lambda m: words[m.group(1).casefold()], text)

        for conv in source.conversations:
            for t in conv.turns:
                t.text = sub(t.text)
                if t.context:
                    t.context = sub(t.context)
                t.speaker = order.get(t.speaker, t.speaker)
    source.names = {order.get(s, s): (order[s] if s in order else n) for s, n in source.names.items()}
    return len(order)
