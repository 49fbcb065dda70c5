"""``data:`` — where conversations come from and how they become chat samples."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from personagpt.config.base import Section

EXPORT_FORMATS = ("telegram", "whatsapp", "discord")
SCRUB_KINDS = ("phone", "email", "url", "card")
MEDIA_KINDS = ("photo", "video", "video_message", "voice", "audio", "sticker", "gif", "file", "contact", "location",
               "poll", "media")


class ExportConfig(Section):
    """``data.export:`` how a chat export's messages become turns (telegram, whatsapp, discord)."""

    forwarded: Literal["tag", "keep", "drop"] = Field(
        "tag", description="a forwarded message (Telegram forwarded_from): prefix forwarded_tag, keep as is, or drop")
    forwarded_tag: str = Field("[forwarded]", description="prefix of a forwarded message's text (forwarded: tag)")
    media: Literal["placeholder", "drop"] = Field(
        "placeholder", description="a photo, video, voice message, file...: media_placeholder in its place (a caption "
        "follows it), or drop it (a media message without a caption is then dropped)")
    media_placeholder: str = Field(
        "<{kind}>", description="text standing for one media item; {kind} is one of " + ", ".join(MEDIA_KINDS))
    stickers: Literal["emoji", "placeholder", "drop"] = Field(
        "emoji", description="a sticker: its emoji (Telegram sticker_emoji; elsewhere the placeholder), the "
        "placeholder, or drop it")
    date_order: Literal["auto", "day_first", "month_first"] = Field(
        "auto", description="WhatsApp dates: auto infers day-first or month-first from the whole file")

    @field_validator("media_placeholder")
    @classmethod
    def _placeholder(cls, v: str) -> str:
        try:
            v.format(kind="photo")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"may only use the field {{kind}}: {e}") from None
        return v


class DataConfig(Section):
    format: Literal["chitchat", "csv", "jsonl", "telegram", "whatsapp", "discord"] = Field(
        "chitchat", description="chitchat (the package), csv, jsonl, or a chat export: telegram (Telegram Desktop "
        "JSON), whatsapp (Export chat .txt), discord (DiscordChatExporter JSON)")
    path: Path | None = Field(None, description="input file (chitchat comes from its package); discord: a channel "
                              "JSON or a folder of them")
    persona: str = Field("most_active", min_length=1,
                         description="speaker whose turns become assistant targets: an id or display name (see "
                         "personagpt data inspect), or most_active")
    export: ExportConfig = Field(default_factory=ExportConfig)
    scrub: list[Literal["phone", "email", "url", "card"]] | None = Field(
        None, description="kinds of personal data replaced by placeholders (<phone>, <email>, <url>, <card>) before "
        "anything is written; null: all four for the export formats, none for chitchat/csv/jsonl; [] turns it off")
    phone_regions: list[str] = Field(
        ["US", "GB", "UA"], min_length=1,
        description="regions (ISO 3166 codes) whose national phone formats are recognised without a +country code")
    pseudonymize: bool = Field(
        False, description="replace the other speakers' names in the text and in the manifest with Person 1, "
        "Person 2, ...")
    session_gap_seconds: float = Field(3600.0, gt=0, description="split a conversation where the gap exceeds this")
    max_length: int = Field(512, ge=16, description="tokens per sample; oldest context turns dropped to fit")
    max_context_turns: int = Field(8, ge=0, description="previous turns of the session kept as context (at most)")
    system_prompt: str | None = Field(None, description="system message prepended to every sample; always kept")
    label_turns: Literal["last", "all"] = Field(
        "last", description="train on the final persona reply of a sample, or on every persona turn in it")
    merge_consecutive: bool = Field(True, description="join consecutive messages of one speaker into one turn")
    min_answer_chars: int = Field(1, ge=1)
    val_fraction: float = Field(0.05, ge=0, lt=0.5)
    test_fraction: float = Field(0.05, ge=0, lt=0.5)
    split_seed: int = 0
    max_conversations: int | None = Field(None, ge=1, description="keep only the first N persona conversations")

    @field_validator("persona", mode="before")
    @classmethod
    def _persona(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v  # numeric ids: data.persona=1001

    @field_validator("phone_regions")
    @classmethod
    def _regions(cls, v: list[str]) -> list[str]:
        import phonenumbers

        bad = [r for r in v if r.upper() not in phonenumbers.SUPPORTED_REGIONS]
        if bad:
            raise ValueError(f"unknown region(s) {bad} (ISO 3166 codes such as US, GB, UA, DE)")
        return [r.upper() for r in v]

    @property
    def scrub_kinds(self) -> tuple[str, ...]:
        """The kinds scrubbed: ``scrub``, or its default for the format."""
        if self.scrub is None:
            return SCRUB_KINDS if self.format in EXPORT_FORMATS else ()
        return tuple(k for k in SCRUB_KINDS if k in self.scrub)

    @model_validator(mode="after")
    def _check(self):
        if self.format not in ("chitchat",) and self.path is None:
            raise ValueError(f"data.path is required when data.format is {self.format}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.test_fraction must leave data for training")
        return self
