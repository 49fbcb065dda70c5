"""``chat:`` — ``personagpt chat``, the terminal and web chat with a served model (personagpt/chat/).

Decoding values left null are the server's defaults (the artifact's generation config); ``/set`` changes them
for one session.
"""

from __future__ import annotations

from pydantic import Field

from personagpt.config.base import Section


class ChatConfig(Section):
    max_tokens: int | None = Field(None, ge=1, description="reply length limit; null: 256, at most a quarter of "
                                                           "the served context")
    temperature: float | None = Field(None, ge=0, le=2, description="null: the server's default")
    top_p: float | None = Field(None, gt=0, le=1, description="null: the server's default")
    host: str = Field("127.0.0.1", min_length=1, description="--web: address the page binds (another address opens "
                                                             "it to the network; warned when there is no API key)")
    port: int = Field(7860, ge=0, le=65535, description="--web: port of the page (0: a free port)")
