"""The terminal front end: a prompt_toolkit prompt (arrow keys recall earlier lines), replies streamed as they
arrive. Ctrl-C during a reply stops it (the message stays, unanswered: /retry); Ctrl-C or Ctrl-D at the prompt,
or /exit, ends the chat. Errors are printed as one ``error: ...`` line and the session goes on."""

from __future__ import annotations

import sys

from prompt_toolkit import PromptSession
from prompt_toolkit.history import InMemoryHistory

from personagpt.chat.client import ChatError
from personagpt.chat.commands import Exit, Reply, is_command, run_command
from personagpt.chat.session import Session

PROMPT = "you> "
PERSONA = "persona> "


def stream_reply(pieces, out=sys.stdout) -> None:
    out.write(PERSONA)
    out.flush()
    try:
        for piece in pieces:
            out.write(piece)
            out.flush()
        out.write("\n")
    except KeyboardInterrupt:
        pieces.close()
        out.write("\n(reply interrupted and not kept; /retry asks again)\n")
    except ChatError as e:
        out.write(f"\nerror: {e}\n")
    out.flush()


def chat_loop(session: Session, banner: str) -> int:
    print(banner, flush=True)
    prompt = PromptSession(history=InMemoryHistory())
    while True:
        try:
            line = prompt.prompt(PROMPT).strip()
        except (EOFError, KeyboardInterrupt):
            print("bye", flush=True)
            return 0
        if not line:
            continue
        try:
            if is_command(line):
                result = run_command(session, line)
                if isinstance(result, Reply):
                    stream_reply(result.pieces)
                else:
                    print(result, flush=True)
            else:
                stream_reply(session.send(line))
        except Exit:
            print("bye", flush=True)
            return 0
        except ChatError as e:
            print(f"error: {e}", flush=True)
