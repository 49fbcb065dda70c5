"""Locust users for an OpenAI-compatible LLM server: streamed chat completions with LLM latency metrics.

Started by ``python loadtest/run.py`` (which validates the config, checks the server, picks the prompts and
writes the plan this file reads from ``$PERSONAGPT_LOADTEST_PLAN``). Workers of a distributed run
(``run.py --worker --master-host H``) need no plan file: they ask the master for it.

What Locust shows (its console, web UI, CSV and HTML report):
- ``POST /v1/chat/completions``: the whole streamed request (response time = end-to-end latency; "average size"
  = output tokens per request; failures: HTTP errors, timeouts, error events or a stream that generated no token).
- ``LLM TTFT``: time to first token; ``LLM ITL``: time per output token after the first (vLLM's TPOT).
Each request is also recorded exactly (``records.jsonl``) for ``summary.json``; workers send their records to the
master with their regular stats reports.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.contrib.fasthttp import FastHttpSession
from locust.rpc import Message
from locust.runners import WORKER_REPORT_INTERVAL, LocalRunner, MasterRunner, WorkerRunner
from locust.stats import CSV_STATS_INTERVAL_SEC

from loadtest.locust_names import CHAT_PATH, ITL_NAME, LLM_TYPE, TTFT_NAME
from loadtest.shapes import PoissonSchedule, SweepController, step_stages, step_users_at
from loadtest.stream import StreamParser, chat_body

PLAN_ENV = "PERSONAGPT_LOADTEST_PLAN"
PLAN_WAIT_S = 60.0
log = logging.getLogger("personagpt.loadtest")


class State:
    """Per-process state shared by all users (gevent: one thread, no locks needed)."""

    def __init__(self) -> None:
        self.plan: dict[str, Any] | None = None
        self.plan_ready = Event()
        self.records: list[dict] = []      # local/master: every record of this test
        self.unsent: list[dict] = []       # worker: records not yet reported to the master
        self.stages: list[dict] = []
        self.sweep: SweepController | None = None
        self.schedule: PoissonSchedule | None = None
        self.counter = itertools.count()
        self.sent = 0
        self.stopped = False
        self.worker_done = False
        self.started_at: float | None = None
        self.final_from: set[str] = set()
        self.reporting: set[str] = set()
        self.worker_index = 0
        self.workers = 1
        self._count_tokens = None

    def set_plan(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.plan_ready.set()

    def begin(self) -> None:
        # not the stages: a shape's first tick (which records the first stage) runs just before test_start
        self.records, self.unsent = [], []
        self.counter, self.sent, self.stopped, self.worker_done = itertools.count(), 0, False, False
        self.started_at = time.time()
        self.schedule = None
        self.final_from, self.reporting = set(), set()

    def add(self, rec: dict, worker: bool) -> None:
        (self.unsent if worker else self.records).append(rec)

    def next_prompt(self) -> dict:
        prompts = self.plan["prompts"]
        offset = self.worker_index * max(1, len(prompts) // max(1, self.workers))
        return prompts[(offset + next(self.counter)) % len(prompts)]

    def poisson(self) -> PoissonSchedule:
        if self.schedule is None:
            p = self.plan
            self.schedule = PoissonSchedule(p["poisson"]["rate"] / self.workers, time.monotonic(), p["duration_s"],
                                            seed=p["seed"] + 7919 * self.worker_index, limit=p["max_requests"])
        return self.schedule

    def count_tokens(self):
        """The served tokenizer's token counter, for servers that send no usage (loaded on first need)."""
        if self._count_tokens is None:
            path = (self.plan or {}).get("tokenizer")
            if not path or not Path(path).is_dir():
                return None
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path)
            self._count_tokens = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])
        return self._count_tokens


STATE = State()
if os.environ.get(PLAN_ENV):
    STATE.set_plan(json.loads(Path(os.environ[PLAN_ENV]).read_text()))


# ------------------------------------------------------------------------------------------------------ users


class ChatUser(FastHttpUser):
    """One user: a streamed chat completion after another (closed loop), or at Poisson arrival times."""

    wait_time = constant(0)

    def on_start(self) -> None:
        if not STATE.plan_ready.wait(PLAN_WAIT_S):
            raise RuntimeError(f"no load test plan: set ${PLAN_ENV} or start this worker with loadtest/run.py "
                               f"against a master started by loadtest/run.py")
        p = STATE.plan
        self.client = FastHttpSession(base_url=self.host, request_event=self.environment.events.request, user=self,
                                      connection_timeout=p["connect_timeout_s"],
                                      network_timeout=p["request_timeout_s"], max_retries=0, concurrency=1)
        key = os.environ.get(p["api_key_env"]) or None
        self.headers = {"Accept": "text/event-stream", **({"Authorization": f"Bearer {key}"} if key else {})}
        self.worker = isinstance(self.environment.runner, WorkerRunner)

    @task
    def chat(self) -> None:
        p = STATE.plan
        arrival = None
        if p["profile"] == "poisson":
            arrival = STATE.poisson().next()
            if arrival is None:  # the schedule is over: idle until the run ends
                gevent.sleep(1.0)
                return
            gevent.sleep(max(0.0, arrival - time.monotonic()))
        if p["max_requests"] is not None and p["profile"] != "poisson":
            if STATE.sent >= p["max_requests"]:
                self._limit_reached()
                return
        STATE.sent += 1
        self.send(STATE.next_prompt(), arrival)

    def _limit_reached(self) -> None:
        runner = self.environment.runner
        if isinstance(runner, LocalRunner) and not STATE.stopped:
            STATE.stopped = True
            log.info("loadtest.max_requests=%s reached: stopping", STATE.plan["max_requests"])
            gevent.spawn(runner.quit)
        gevent.sleep(1.0)

    def send(self, prompt: dict, arrival: float | None) -> None:
        p = STATE.plan
        body = chat_body(p["model"], prompt["messages"], p["max_tokens"], p["temperature"], p["ignore_eos"])
        t_wall, t_mono = time.time(), time.monotonic()
        t0 = time.perf_counter()
        parser = StreamParser(start=t0)
        status = None
        with self.client.post(CHAT_PATH, json=body, headers=self.headers, stream=True, catch_response=True,
                              name=CHAT_PATH) as resp:
            try:
                left = max(0.001, p["request_timeout_s"] - (time.perf_counter() - t0))
                with gevent.Timeout(left, TimeoutError(_timeout_text(p))):
                    status = resp.status_code
                    if getattr(resp, "error", None) is not None and not status:
                        parser.error = _transport_error(resp.error, p)
                    elif status != 200:
                        parser.error = f"HTTP {status}: {_error_text(resp)}"
                    else:
                        reader = resp._response  # geventhttpclient: readline returns each line as it arrives
                        while not parser.done:
                            line = reader.readline(b"\n")
                            if not line:
                                break
                            if parser.feed(line, time.perf_counter()):
                                break
                    parser.close(time.perf_counter())
            except (TimeoutError, OSError, gevent.Timeout) as e:
                parser.error = parser.error or (str(e) if isinstance(e, TimeoutError) and str(e) == _timeout_text(p)
                                                else _transport_error(e, p))
                parser.close(time.perf_counter())
            m = parser.metrics(STATE.count_tokens() if parser.usage is None and parser.error is None else None)
            resp.request_meta["response_time"] = (m["e2e"] or 0.0) * 1000.0
            resp.request_meta["response_length"] = m["out"]
            if m["error"] is None:
                resp.success()
            else:
                resp.failure(m["error"])
        if m["error"] is None:
            fire = self.environment.events.request.fire
            fire(request_type=LLM_TYPE, name=TTFT_NAME, response_time=m["ttft"] * 1000.0, response_length=0,
                 exception=None, context={})
            if m["itl"] is not None:
                fire(request_type=LLM_TYPE, name=ITL_NAME, response_time=m["itl"] * 1000.0,
                     response_length=m["out"], exception=None, context={})
        rec = {"t0": t_wall, "t1": t_wall + (m["e2e"] or 0.0), "ttft": m["ttft"], "e2e": m["e2e"], "itl": m["itl"],
               "out": m["out"], "in": m["in"], "chunks": m["chunks"], "finish": m["finish_reason"],
               "status": status, "error": m["error"], "prompt": prompt["id"],
               "users": self.environment.runner.user_count if not self.worker else None,
               "worker": self.environment.runner.client_id if self.worker else None}
        if arrival is not None:
            rec["queue"] = max(0.0, t_mono - arrival)
        STATE.add(rec, self.worker)


def _timeout_text(p: dict) -> str:
    return f"no complete answer within loadtest.request_timeout_s={p['request_timeout_s']:g} s"


def _transport_error(err: BaseException, p: dict) -> str:
    text = f"{type(err).__name__}: {err}"
    if isinstance(err, (TimeoutError, gevent.Timeout)) or "timed out" in text.lower():
        return _timeout_text(p)  # no answer (headers) within the per-request bound
    return text[:300]


def _error_text(resp) -> str:
    try:
        text = resp.text or ""
    except Exception:  # noqa: BLE001 - an unreadable error body still is an HTTP error
        text = ""
    try:
        err = json.loads(text).get("error")
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err or text)
    except (ValueError, AttributeError):
        pass
    return text.strip()[:300] or "(empty body)"


# ------------------------------------------------------------------------------------------------------ shapes


def _define_shape(plan: dict[str, Any] | None):
    """The LoadTestShape of the plan's profile (fixed and poisson use Locust's own -u/-r/-t)."""
    if plan is None or plan["profile"] not in ("step", "sweep"):
        return None
    if plan["profile"] == "step":
        cfg = plan["step"]
        stages = step_stages(cfg["start_users"], cfg["step_users"], cfg["max_users"], cfg["step_duration_s"])

        class StepShape(LoadTestShape):
            """Step ramp: start_users, +step_users every step_duration_s, up to max_users."""

            def tick(self):
                run_time = self.get_run_time()
                users = step_users_at(stages, run_time)
                if users is None or run_time >= plan["run_s"]:
                    return None
                if not STATE.stages or STATE.stages[-1]["users"] != users:
                    STATE.stages.append({"users": users, "start": time.time()})
                return users, cfg["spawn_rate"] or max(users, 1)

        return StepShape

    cfg = plan["sweep"]

    class SweepShape(LoadTestShape):
        """Concurrency sweep: each level in turn, stopping where the server saturates."""

        def tick(self):
            if STATE.sweep is None:
                lag = WORKER_REPORT_INTERVAL + 1.0 if isinstance(self.runner, MasterRunner) else 0.0
                STATE.sweep = SweepController(cfg["levels"], cfg["level_duration_s"], cfg["warmup_s"],
                                              cfg["min_gain"], cfg["stop_on_slo"], plan["slo"],
                                              lambda: STATE.records, report_lag_s=lag)
            if self.get_run_time() >= plan["run_s"]:
                STATE.sweep.stop_reason = STATE.sweep.stop_reason or f"planned run time {plan['run_s']:g} s reached"
                return None
            users = STATE.sweep.tick(time.time())
            if users is None:
                return None
            if not STATE.stages or STATE.stages[-1]["users"] != users:
                STATE.stages.append({"users": users, "start": time.time()})
            return users, users

    return SweepShape


_shape = _define_shape(STATE.plan)
if _shape is not None:
    globals()[_shape.__name__] = _shape  # Locust picks up LoadTestShape classes from this module's globals


# ------------------------------------------------------------------------------------------------------ events


@events.init.add_listener
def _on_init(environment, runner, **_kw) -> None:
    if isinstance(runner, MasterRunner):
        def send_plan(environment, msg, **_):
            if STATE.plan is not None:
                runner.send_message("personagpt_plan", _worker_plan(runner), client_id=msg.node_id)

        runner.register_message("personagpt_plan_request", send_plan)
    elif isinstance(runner, WorkerRunner):
        def got_plan(environment, msg, **_):
            data = msg.data
            STATE.workers = max(1, int(data.pop("_workers", 1)))
            STATE.set_plan(data)

        runner.register_message("personagpt_plan", got_plan)


def _worker_plan(runner) -> dict:
    return {**STATE.plan, "_workers": max(1, runner.worker_count)}


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    runner = environment.runner
    STATE.begin()
    if isinstance(runner, MasterRunner):
        for client in runner.clients.all:
            runner.send_message("personagpt_plan", _worker_plan(runner), client_id=client.id)
    elif isinstance(runner, WorkerRunner):
        STATE.worker_index = getattr(runner, "worker_index", 0) or 0
        if STATE.plan is None:  # normally the master's plan message arrived before the spawn message
            runner.send_message("personagpt_plan_request", None)


@events.report_to_master.add_listener
def _on_report_to_master(client_id, data, **_kw) -> None:
    data["personagpt_records"], STATE.unsent = STATE.unsent, []
    data["personagpt_final"] = STATE.worker_done


@events.worker_report.add_listener
def _on_worker_report(client_id, data, **_kw) -> None:
    recs = data.get("personagpt_records") or []
    STATE.records.extend(recs)
    STATE.reporting.add(client_id)
    if data.get("personagpt_final"):
        STATE.final_from.add(client_id)


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        STATE.worker_done = True
        runner._send_stats()  # the last records (and Locust's own stats), before the worker says it stopped
        return
    if isinstance(runner, MasterRunner):
        _collect_final_reports(runner, environment.stop_timeout or 0.0)
    _write_results(environment)
    STATE.stages, STATE.sweep = [], None  # a next run (web UI) starts its shape afresh
    # Locust's CSV writer rewrites its files once a second: give it one more round with the final numbers
    # (requests that finished while the run was stopping), before Locust closes the files.
    gevent.sleep(CSV_STATS_INTERVAL_SEC + 0.2)


def _collect_final_reports(runner: MasterRunner, stop_timeout: float) -> None:
    """Stop the workers (a headless end or a shape's end quits the master without stopping them first) and
    wait, bounded, until each has sent its last records."""
    workers = {c.id for c in runner.clients.all}
    for client_id in workers - STATE.final_from:
        runner.server.send_to_client(Message("stop", None, client_id))
    deadline = time.monotonic() + stop_timeout + 2 * WORKER_REPORT_INTERVAL + 2
    while time.monotonic() < deadline and not workers <= STATE.final_from:
        gevent.sleep(0.2)
    missing = workers - STATE.final_from
    if missing:
        log.warning("no final report from workers %s: their last records may be missing", sorted(missing))
    for client_id in workers:  # stopped workers left the master's client list: its quit would not reach them
        runner.server.send_to_client(Message("quit", None, client_id))


def _write_results(environment) -> None:
    plan = STATE.plan
    if plan is None or not plan.get("out"):
        return
    out = Path(plan["out"])
    out.mkdir(parents=True, exist_ok=True)
    end = time.time()
    stages = [dict(s) for s in STATE.stages]
    if not stages:  # fixed / poisson: one stage for the whole run
        users = plan["poisson"]["max_concurrency"] if plan["profile"] == "poisson" else plan["users"]
        stages = [{"users": users, "start": STATE.started_at or end}]
    for a, b in zip(stages, stages[1:] + [{"start": end}], strict=False):
        a["end"] = b["start"]
    sweep = None
    if STATE.sweep is not None:
        sweep = {"levels": STATE.sweep.results, "stop_reason": STATE.sweep.stop_reason}
    records = sorted(STATE.records, key=lambda r: r["t0"])
    with open(out / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (out / "stages.json").write_text(json.dumps(
        {"started_at": STATE.started_at, "ended_at": end, "stages": stages, "sweep": sweep,
         "workers": sorted(STATE.reporting) or None}, indent=2) + "\n")
    log.info("wrote %d request records to %s", len(records), out / "records.jsonl")
