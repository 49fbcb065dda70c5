"""Chat exports -> the conversation model (:mod:`personagpt.data.types`), one module per app.

Rules shared by every export reader:

- A chat (a Telegram chat, a WhatsApp file, a Discord channel) is one :class:`Conversation`; its turns carry
  the time they were sent (epoch seconds, UTC where the export says so) and the gap to the previous kept turn.
- A speaker is the export's stable id where it has one (Telegram ``from_id``, Discord ``author.id``), else the
  display name (WhatsApp); ``Source.names`` maps ids to display names, so that ``data.persona`` may be either.
- Only people's messages become turns: service/system messages, bots and non-message types are dropped, and
  so are messages left without text. Media become ``data.export.media_placeholder`` (or are dropped), stickers
  their emoji, forwarded messages are tagged, kept or dropped (``data.export``). ``Source.stats["dropped"]``
  counts what was dropped, by reason.
- Errors name the file and the line or message id, never the message text (a chat export is private).
- Exports are split for train/val/test by session (``per_session_conversations``): one chat is often the
  whole export.
"""
