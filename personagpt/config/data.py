"""``data:`` — where conversations come from and how they become chat samples."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from personagpt.config.base import Section


class DataConfig(Section):
    format: Literal["chitchat", "csv", "jsonl"] = "chitchat"
    path: Path | None = Field(None, description="input file for csv/jsonl (chitchat comes from its package)")
    persona: str = Field("most_active", min_length=1,
                         description="speaker whose turns become assistant targets, or most_active")
    session_gap_seconds: float = Field(3600.0, gt=0, description="split a conversation where the gap exceeds this")
    max_length: int = Field(512, ge=16, description="tokens per sample; oldest context turns dropped to fit")
    max_context_turns: int = Field(8, ge=0, description="previous turns of the session kept as context (at most)")
    system_prompt: str | None = Field(None, description="system message prepended to every sample; always kept")
    label_turns: Literal["last", "all"] = Field(
        "last", description="train on the final persona reply of a sample, or on every persona turn in it")
    train_samples: Literal["reply", "session"] = Field(
        "reply", description="reply: one sample per persona reply with up to max_context_turns previous turns "
                             "(label_turns); session: the train split as windows of whole sessions, exchanges "
                             "packed up to max_length, split at turn boundaries, every persona turn labelled once "
                             "(the context is encoded once, not once per reply; a persona turn that cannot fit "
                             "max_length is counted and dropped). val/test stay reply samples so perplexities "
                             "compare across modes")
    merge_consecutive: bool = Field(True, description="join consecutive messages of one speaker into one turn")
    min_answer_chars: int = Field(1, ge=1, description="reply samples: skip persona replies shorter than this "
                                                       "(session windows label every persona turn)")
    val_fraction: float = Field(0.05, ge=0, lt=0.5)
    test_fraction: float = Field(0.05, ge=0, lt=0.5)
    split_seed: int = 0
    max_conversations: int | None = Field(None, ge=1, description="keep only the first N persona conversations")

    @model_validator(mode="after")
    def _check(self):
        if self.format in ("csv", "jsonl") and self.path is None:
            raise ValueError(f"data.path is required when data.format is {self.format}")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("data.val_fraction + data.test_fraction must leave data for training")
        return self
