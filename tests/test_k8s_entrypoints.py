"""Every Job's command, as the kubelet would run it, parses with the real entry points of this checkout.

For each container of each Job and JobSet (init containers too) in both overlays: the environment is built from
the rendered ConfigMaps/Secrets and the downward-API fields the controllers set, ``$(VAR)`` references are
expanded, and the command line is handed to the entry's own argparse parser (tests/fixtures/k8s.py DRY_PARSE:
the real parser parses the real arguments, then the process exits before the stage runs). ``deepspeed`` is
parsed by DeepSpeed's launcher, then the script it would start is parsed with the arguments the launcher passes
(``--local_rank=N`` first). Config files and ``key=value`` overrides are validated by ``personagpt config show``
(pydantic: an unknown key or a bad value is exit 2). The multi-node launch is resolved with DeepSpeed's own
hostfile and resource functions. k8s/wait_for_artifact.py, the init container that orders the pipeline, runs
for real against real artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from fixtures.k8s import (
    OVERLAYS,
    ROOT,
    command_line,
    container_env,
    containers,
    dry_parse,
    find,
    jobset_pod_fields,
    object_data,
    pods,
)

# Every entry point the pipeline Jobs call (command[0] after the interpreter); all must be checked.
EXPECTED_ENTRIES = {"personagpt", "deepspeed", "train/run.py", "distill/run.py", "quantize/run.py",
                    "loadtest/run.py", "serve/ready.py", "k8s/wait_for_artifact.py", "k8s/resume_or_start.py"}


def job_containers(docs):
    for res, _, _, pod in pods(docs):
        if res["kind"] == "JobSet":
            fields = jobset_pod_fields(res, 0, 0, 0)
        elif res["kind"] == "Job":
            fields = {"metadata.name": f"{res['metadata']['name']}-abcde", "metadata.namespace": "personagpt"}
        else:
            continue
        for c in containers(pod):
            yield res, fields, c


def argv_work_dir(container, env) -> str:
    args = command_line(container, env)
    return args[args.index("--work-dir") + 1]


def config_show(config: str, overrides: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "personagpt.cli", "config", "show", "--config", config, *overrides],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def entry_overrides(script: str, overrides: list[str]) -> list[str]:
    """Overrides as the entry hands them to load_config: quantize/run.py scopes bare quantize keys itself
    (`method=int8` -> `quantize.method=int8`), with its own function."""
    if script == "quantize/run.py":
        from quantize.run import scoped_overrides

        return scoped_overrides(overrides)
    return overrides


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_job_command_parses_with_the_real_entry_points(rendered, overlay):
    docs = rendered[overlay]
    checked: dict[str, list[str]] = {}
    for res, fields, c in job_containers(docs):
        where = f"{res['kind']}/{res['metadata']['name']} container {c['name']}"
        env = container_env(c, docs, fields)
        argv = command_line(c, env)
        assert not any("$(" in a for a in argv), f"{where}: unexpanded reference in {argv}"
        if argv[0] in ("python3", "python"):
            argv = argv[1:]
        parsed = dry_parse(argv, ROOT)
        checked.setdefault(argv[0], []).append(where)
        script, args = argv[0], parsed["args"]
        resume = False
        if script == "k8s/resume_or_start.py":
            # the wrapped command, as the first start runs it; a restarted pod's gets --resume appended (below)
            assert args["command"][0] == "--", where
            argv = args["command"][1:]
            parsed = dry_parse(argv, ROOT)
            checked.setdefault(argv[0], []).append(where)
            script, args, resume = argv[0], parsed["args"], True
            run_dir = args["user_args"][args["user_args"].index("--config") + 2:]
            assert argv_work_dir(c, env) in [o.split("=", 1)[1] for o in run_dir if ".work_dir=" in o], where
        if script == "deepspeed":
            # what deepspeed.launcher.launch starts on every rank: python -u SCRIPT --local_rank=N USER_ARGS
            assert not args["no_local_rank"]
            script, user_args = args["user_script"], args["user_args"]
            for extra in ([], ["--resume"]) if resume else ([],):
                parsed = dry_parse([script, "--local_rank=0", *user_args, *extra], ROOT)
                assert parsed["args"]["local_rank"] == 0 and parsed["args"]["resume"] is bool(extra), where
            checked.setdefault(script, []).append(where)
            args = parsed["args"]
        if args.get("config") is not None and "overrides" in args:
            proc = config_show(args["config"], entry_overrides(script, args["overrides"]))
            assert proc.returncode == 0, f"{where}: config {args['config']} {args['overrides']}:\n{proc.stderr}"
        if script == "k8s/wait_for_artifact.py":
            assert args["folder"].startswith("/artifacts/") and args["timeout"] >= 3600, where
    assert set(checked) == EXPECTED_ENTRIES, f"checked {sorted(checked)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_multinode_launch_resolves_with_deepspeeds_launcher(rendered, overlay, tmp_path):
    """The JobSet pods' `deepspeed --hostfile ... --no_ssh --node_rank i` resolve, with DeepSpeed's own functions,
    to one world: every pod a distinct node of the same hostfile, RANKS_PER_NODE local ranks each."""
    from deepspeed.launcher import runner

    docs = rendered[overlay]
    js = find(docs, "JobSet", "personagpt-train")
    job = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    pod = job["template"]["spec"]
    c = pod["containers"][0]
    hostfile_cm = next(v for v in pod["volumes"] if v["name"] == "hostfile")["configMap"]["name"]
    hostfile = tmp_path / "hostfile"
    hostfile.write_text(object_data(docs, "ConfigMap", hostfile_cm)["hostfile"])
    ranks = int(container_env(c, docs, jobset_pod_fields(js, 0, 0, 0))["RANKS_PER_NODE"])
    worlds = []
    for i in range(job["parallelism"]):
        argv = command_line(c, container_env(c, docs, jobset_pod_fields(js, 0, 0, i)))
        argv = argv[argv.index("deepspeed") + 1:]
        argv[argv.index("--hostfile") + 1] = str(hostfile)
        args = runner.parse_args(argv)
        assert args.no_ssh and args.node_rank == i and args.master_port == 29500
        pool = runner.fetch_hostfile(args.hostfile)
        active = runner.parse_inclusion_exclusion(pool, args.include, args.exclude)
        active = runner.apply_num_nodes_and_gpus(active, args.num_nodes, args.num_gpus)
        assert 0 <= args.node_rank < len(active)
        assert list(active)[0] == args.master_addr  # rendezvous at the first host of the world
        worlds.append(dict(active))
    assert all(w == worlds[0] for w in worlds)
    assert len(worlds[0]) == job["parallelism"] and all(len(s) == ranks for s in worlds[0].values())


# --------------------------------------------------------------------------------------- wait_for_artifact


def wait_cmd(folder, kind, timeout, interval="0.2"):
    return [sys.executable, str(ROOT / "k8s" / "wait_for_artifact.py"), str(folder), "--kind", kind,
            "--timeout", str(timeout), "--interval", interval]


def test_wait_for_artifact_orders_the_pipeline(tiny_dataset, tmp_path):
    # ready at once
    t0 = time.monotonic()
    ok = subprocess.run(wait_cmd(tiny_dataset, "dataset", 60), capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "is ready (dataset from stage" in ok.stdout, ok.stderr
    assert time.monotonic() - t0 < 30
    # a model is expected where a dataset is: a wiring mistake, exit 2 at once
    wrong = subprocess.run(wait_cmd(tiny_dataset, "model", 60), capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "artifact kind is 'dataset', expected 'model'" in wrong.stderr
    # nothing comes: exit 1 naming the folder, after the timeout
    missing = tmp_path / "run" / "teacher"
    t0 = time.monotonic()
    late = subprocess.run(wait_cmd(missing, "model", 1.5), capture_output=True, text=True, timeout=120)
    assert late.returncode == 1 and str(missing) in late.stderr and time.monotonic() - t0 >= 1.5
    # the upstream stage publishes while we wait (atomic rename, as staging_dir does): ready then
    target = tmp_path / "run" / "data"
    proc = subprocess.Popen(wait_cmd(target, "dataset", 60), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, "returned before the artifact existed"
        staging = tmp_path / "run" / ".data.tmp-x"
        shutil.copytree(tiny_dataset, staging)
        os.rename(staging, target)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "waiting for dataset artifact" in out and "is ready" in out, err


def test_dry_parse_rejects_what_the_entries_reject():
    """The parsing check is not vacuous: the real parsers refuse a wrong flag, the config a wrong key."""
    ok = dry_parse(["train/run.py", "--config", "configs/tiny.yaml", "--resume", "train.zero_stage=3"], ROOT)
    assert ok["args"]["resume"] is True and ok["args"]["overrides"] == ["train.zero_stage=3"]
    with pytest.raises(AssertionError, match="unrecognized arguments: --restart"):
        dry_parse(["train/run.py", "--config", "configs/tiny.yaml", "--restart"], ROOT)
    with pytest.raises(AssertionError, match="invalid choice"):
        dry_parse(["personagpt", "data", "prepair", "--config", "configs/tiny.yaml"], ROOT)
    with pytest.raises(AssertionError, match="invalid int value: 'two'"):
        dry_parse(["deepspeed", "--num_gpus", "two", "train/run.py"], ROOT)
    bad = config_show("configs/smollm2-persona.yaml", ["train.output_dirr=/artifacts/x"])
    assert bad.returncode == 2 and "train.output_dirr: unknown key" in bad.stderr


def test_resume_or_start_decides_with_the_training_checkpoints(tmp_path):
    """No complete checkpoint: the command runs as given. A complete one (trainer_state.json written, the
    training engine's rule): it gets --resume. A half-written one (killed mid-save) does not count."""
    echo = [sys.executable, "-c", "import json, sys; print('ARGV', json.dumps(sys.argv[1:]))"]
    run_dir = tmp_path / "train"

    def run():
        proc = subprocess.run([sys.executable, str(ROOT / "k8s" / "resume_or_start.py"), "--work-dir", str(run_dir),
                               "--", *echo, "--config", "c.yaml"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.split("ARGV ", 1)[1]), proc.stdout

    argv, out = run()
    assert argv == ["--config", "c.yaml"] and "starting" in out
    half = run_dir / "checkpoints" / "step00000020"
    half.mkdir(parents=True)  # DeepSpeed shards but no trainer_state.json: the save did not finish
    argv, _ = run()
    assert argv == ["--config", "c.yaml"]
    done = run_dir / "checkpoints" / "step00000010"
    done.mkdir()
    (done / "trainer_state.json").write_text(json.dumps({"step": 10}))
    argv, out = run()
    assert argv == ["--config", "c.yaml", "--resume"] and "step00000010 (step 10)" in out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_chat_deployment_talks_to_the_serve_service_with_its_key(rendered, overlay):
    """The chat page's command parses with the real `personagpt chat` parser, its config loads with the key
    variable it sets, and it points at the Service and the artifact the serving Deployment serves."""
    docs = rendered[overlay]
    chat = find(docs, "Deployment", "personagpt-chat")
    c = next(c for c in containers(chat["spec"]["template"]["spec"]) if c["name"] == "chat")
    env = container_env(c, docs, {"metadata.name": "personagpt-chat-abcde", "metadata.namespace": "personagpt"})
    argv = command_line(c, env)
    assert not any("$(" in a for a in argv), argv
    args = dry_parse(argv, ROOT)["args"]
    serve = find(docs, "Service", "personagpt-serve")
    assert args["url"] == f"http://personagpt-serve:{serve['spec']['ports'][0]['port']}"
    assert args["web"] and args["host"] == "0.0.0.0" and args["model"] == env["SERVED_MODEL_NAME"]
    assert args["artifact"] == f"{env['RUN_DIR']}/{env['SERVE_ARTIFACT']}"
    proc = config_show(args["config"], args["overrides"])
    assert proc.returncode == 0, proc.stderr
    key_env = next(ln.split(":", 1)[1].strip() for ln in proc.stdout.splitlines() if "api_key_env:" in ln)
    assert key_env in env, f"the chat reads ${key_env}, which its container does not set"
    svc = find(docs, "Service", "personagpt-chat")
    assert svc["spec"]["ports"][0]["port"] == int(args["port"])
