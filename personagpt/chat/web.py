"""``personagpt chat --web``: the chat page, on NiceGUI.

Why NiceGUI, not Gradio's ChatInterface (the ecosystem's norm): every Gradio release that fits this Python needs
``pillow<13``, and the project's environment has pillow 13 (pulled by matplotlib/tensorboard/GPTQModel at their
pins) — installing Gradio would downgrade it. NiceGUI (FastAPI + Vue/Quasar, actively maintained) installs beside
every pin, keeps the page's state in this Python process — so the page runs the very same Session, History and
slash-command code as the terminal — and pushes each streamed piece over its websocket.

Rules: every browser tab gets its own Session (a reload starts a new one). The page binds 127.0.0.1 unless
``--host`` says otherwise; opened to the network without an API key set, it warns. ``/save`` is refused on the
page (a visitor must not write files on this machine): the Download button gives the same JSONL.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator

from personagpt.chat.client import ChatError
from personagpt.chat.commands import Exit, Reply, is_command, run_command
from personagpt.chat.session import Session
from personagpt.network import WILDCARDS, free_port

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TITLE = "PersonaGPT chat"


async def _drain(pieces: Iterator[str], on_piece: Callable[[str], None]) -> None:
    """Run the (blocking) stream in a thread; hand each piece to ``on_piece`` on the event loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def worker():
        try:
            for piece in pieces:
                loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))
        except ChatError as e:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", e))
        except Exception as e:  # noqa: BLE001 - shown as one line like every other failure
            loop.call_soon_threadsafe(queue.put_nowait, ("error", ChatError(f"{type(e).__name__}: {e}")))

    threading.Thread(target=worker, daemon=True).start()
    while True:
        kind, value = await queue.get()
        if kind == "piece":
            on_piece(value)
        elif kind == "error":
            raise value
        else:
            return


def build_page(new_session: Callable[[], Session]) -> Callable[[], None]:
    from nicegui import ui

    async def page() -> None:
        session = new_session()
        ui.page_title(TITLE)
        busy = {"on": False}

        with ui.header().classes("items-center"):
            ui.label(TITLE).classes("text-lg font-bold")
            model_label = ui.label("connecting...").classes("chat-model")

        with ui.row().classes("w-full no-wrap items-start"):
            with ui.column().classes("grow"):
                conversation = ui.column().classes("w-full chat-conversation")
                status = ui.label("").classes("text-negative chat-error")
                with ui.row().classes("w-full items-center no-wrap"):
                    box = ui.input(placeholder="Message (or /help)").classes("grow chat-input") \
                        .props("outlined autofocus")
                    send_button = ui.button("Send").classes("chat-send")
            with ui.card().classes("w-96 chat-settings"):
                ui.label("Settings").classes("font-bold")
                system_box = ui.textarea("System prompt", value=session.history.system or "",
                                         placeholder="none").classes("w-full").props("autogrow")
                temperature = ui.number("Temperature", value=session.settings.temperature, min=0, max=2, step=0.1,
                                        placeholder="server default").classes("w-full")
                max_tokens = ui.number("Max tokens", value=session.max_tokens, min=1, step=1) \
                    .classes("w-full chat-max-tokens")
                policy_label = ui.label(session.policy()).classes("text-xs text-grey-7 chat-policy")
                with ui.row():
                    ui.button("New chat", on_click=lambda: act(session.new)).props("flat")
                    ui.button("Undo", on_click=lambda: act(session.undo)).props("flat")
                    ui.button("Retry", on_click=lambda: reply(session.retry)).props("flat")
                ui.button("Download transcript", on_click=lambda: download()).classes("chat-download").props("flat")

        def apply_settings() -> None:
            session.set_system(system_box.value)
            session.settings.temperature = temperature.value
            session.settings.max_tokens = int(max_tokens.value) if max_tokens.value else None
            policy_label.set_text(session.policy())

        for element in (system_box, temperature, max_tokens):
            element.on_value_change(lambda _: apply_settings())

        def render() -> None:
            conversation.clear()
            with conversation:
                for t in session.history.turns:
                    ui.chat_message(t.user, name="you", sent=True)
                    if t.reply is not None:
                        with ui.chat_message(name="persona"):
                            ui.label(t.reply).classes("chat-reply")

        def act(fn) -> None:
            if busy["on"]:
                return
            try:
                fn()
                status.set_text("")
            except ChatError as e:
                status.set_text(f"error: {e}")
            render()

        async def reply(start: Callable[[], Iterator[str]]) -> None:
            if busy["on"]:
                return
            busy["on"] = True
            send_button.disable()
            status.set_text("")
            try:
                pieces = start()
                render()
                with conversation, ui.chat_message(name="persona"):
                    live = ui.label("").classes("chat-reply chat-streaming")
                await _drain(pieces, lambda p: live.set_text(live.text + p))
                live.classes(remove="chat-streaming")
            except ChatError as e:
                status.set_text(f"error: {e}")
                render()
            finally:
                busy["on"] = False
                send_button.enable()
                policy_label.set_text(session.policy())

        async def send() -> None:
            text = (box.value or "").strip()
            if not text or busy["on"]:
                return
            box.set_value("")
            if is_command(text):
                if text.split()[0] == "/save":
                    status.set_text("error: /save is not available on the page: use Download transcript")
                    return
                try:
                    result = run_command(session, text)
                except Exit:
                    status.set_text("close the tab to leave")
                    return
                except ChatError as e:
                    status.set_text(f"error: {e}")
                    return
                if isinstance(result, Reply):
                    await reply(lambda: result.pieces)
                else:
                    ui.notify(result, multi_line=True, close_button=True)
                    system_box.set_value(session.history.system or "")
                    render()
                return
            await reply(lambda: session.send(text))

        def download() -> None:
            lines = session.transcript_lines()
            if not lines:
                status.set_text("error: nothing to download yet")
                return
            ui.download.content("\n".join(lines) + "\n", f"chat-{session.id}.jsonl", "application/jsonl")

        send_button.on_click(send)
        box.on("keydown.enter", send)
        try:
            model = await asyncio.to_thread(lambda: session.model)
            model_label.set_text(f"model: {model}")
            max_tokens.set_value(session.max_tokens)
            policy_label.set_text(session.policy())
        except ChatError as e:
            model_label.set_text("server unreachable")
            status.set_text(f"error: {e}")

    return page


def serve_page(new_session: Callable[[], Session], host: str, port: int, has_key: bool, key_env: str,
               say=print) -> int:
    from nicegui import ui

    if host not in LOOPBACK and not has_key:
        say(f"warning: --host {host} opens the chat page to the network and ${key_env} is not set: anyone who can "
            "reach it can talk to the model")
    port = port or free_port(host)
    shown = "127.0.0.1" if host in WILDCARDS else host
    say(f"chat page: http://{shown}:{port}/ (Ctrl-C stops it)")
    ui.run(root=build_page(new_session), host=host, port=port, title=TITLE, reload=False, show=False,
           show_welcome_message=False, favicon="💬")
    return 0
