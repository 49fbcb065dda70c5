"""``personagpt chat``: wire the pieces together — which server (``--url``, or ``--artifact`` started here), which
token counter (the artifact's tokenizer, else the server's /tokenize), which system prompt (the artifact's
lineage), which front end (the terminal, or ``--web``).

    personagpt chat --url URL [--model NAME] [--artifact DIR]     a running server (DIR: tokenizer, system prompt)
    personagpt chat --artifact DIR [--engine vllm|baseline]         serve DIR for this chat, stopped on exit
    ... [--web [--host H] [--port P]]                              the browser page instead of the terminal
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from personagpt.chat.client import ChatClient, ChatError
from personagpt.chat.history import ServerCounter, TokenizerCounter, trained_system_prompt
from personagpt.chat.session import Session, Settings
from personagpt.errors import PersonaGPTError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="a running OpenAI-compatible server (vLLM, the baseline, the k8s Service)")
    p.add_argument("--model", help="served model name (default: the server's first model)")
    p.add_argument("--artifact", type=Path, help="model artifact: its tokenizer counts tokens, its dataset's "
                                                 "system prompt is used; without --url it is served for this chat")
    p.add_argument("--engine", choices=["vllm", "baseline"], default=None,
                   help="--artifact without --url: the server to start (default: serve.engine, vllm)")
    p.add_argument("--context", type=int, default=None, help="context length, when the server does not say it")
    p.add_argument("--web", action="store_true", help="open the chat page in the browser instead of the terminal")
    p.add_argument("--host", default=None, help="--web: address to bind (= chat.host, default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="--web: port (= chat.port, default 7860)")


def say(msg: str) -> None:
    print(f"chat: {msg}", file=sys.stderr, flush=True)


def _terminate_on_signals() -> None:
    """SIGTERM / SIGHUP end the chat like Ctrl-C does, so the ``finally`` blocks stop a server we started."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def run(args) -> int:
    from personagpt.config import load_config

    if args.url is None and args.artifact is None:
        raise PersonaGPTError("personagpt chat needs --url URL (a running server) or --artifact DIR (served here)")
    if args.engine and args.url:
        raise PersonaGPTError("--engine only applies when the chat starts the server (--artifact without --url)")
    cfg = load_config(args.config, args.overrides)
    system = None
    if args.artifact is not None:
        from personagpt.model_artifact import open_model_artifact

        args.artifact = open_model_artifact(args.artifact, "--artifact").path
        system = trained_system_prompt(args.artifact)
    api_key = os.environ.get(cfg.serve.api_key_env) or None
    _terminate_on_signals()
    with contextlib.ExitStack() as stack:
        url, model, context = args.url, args.model, args.context
        if url is None:
            from personagpt.chat.server import started_server

            overrides = [o for o in args.overrides if o.startswith("serve.")]
            started = stack.enter_context(started_server(
                args.artifact, args.engine or cfg.serve.engine, args.config, overrides,
                cfg.serve.ready_timeout_s + 60, cfg.serve.shutdown_timeout_s, say))
            url, model, context = started.url, started.model, context or started.max_model_len
            say(f"ready: {url} serves {model!r}")
        client = ChatClient(url, api_key, cfg.serve.api_key_env)
        stack.callback(client.close)

        def counter(session: Session):
            if args.artifact is not None:
                return TokenizerCounter(args.artifact)
            return ServerCounter(client, lambda: session.model)

        def new_session() -> Session:
            return Session(client, model, system, counter, context,
                           Settings(cfg.chat.temperature, cfg.chat.top_p, cfg.chat.max_tokens))

        if args.web:
            from personagpt.chat.web import serve_page

            host = args.host or cfg.chat.host
            port = args.port if args.port is not None else cfg.chat.port
            return serve_page(new_session, host, port, api_key is not None, cfg.serve.api_key_env, say)
        from personagpt.chat.terminal import chat_loop

        session = new_session()
        try:
            return chat_loop(session, banner(session, url))
        except KeyboardInterrupt:
            print("bye", flush=True)
            return 0


def banner(session: Session, url: str) -> str:
    try:
        where = f"chatting with {session.model!r} at {url}"
    except ChatError as e:
        where = f"chatting at {url} (error: {e}; /retry once it answers)"
    system = f"system prompt: {session.history.system!r}" if session.history.system else "system prompt: none"
    return f"{where}\n{system}\n{session.policy()}\n/help lists the commands; Ctrl-D or /exit leaves."
