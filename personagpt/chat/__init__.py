"""``personagpt chat``: talk to a served persona model, in the terminal or in the browser (``--web``).

Both front ends share one :class:`~personagpt.chat.session.Session` (multi-turn memory, truncation, slash commands)
over the OpenAI-compatible API, so they work against vLLM, the baseline server or the Kubernetes Service alike:

    client.py    streaming chat completions (the ``openai`` package); every failure becomes one ChatError line
    history.py   the conversation and its truncation policy (tokens counted with the chat template, never words)
    session.py   one chat: send / retry / undo / new, settings, the saved transcripts
    commands.py  the slash commands (/new /undo /retry /history /system /set /save /help /exit)
    terminal.py  the prompt_toolkit front end;  web.py  the NiceGUI page
    server.py    ``--artifact DIR``: serve/run.py started as a child process group, stopped on exit
    command.py   the one command that opens a chat with a run's served model (printed by ``make demo``)
"""
