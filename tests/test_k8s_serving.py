"""The serving Deployment's own containers, run locally against the tiny artifact, serve where its probes look.

From the cpu overlay's rendered Deployment (the overlay for machines like this one): the init container and the
vLLM container run with their own command, args and environment (ConfigMaps, the Secret), $(VAR)-expanded as the
kubelet does. What a pod has and this machine lacks is mapped, nothing else: the volumes become local folders
(the artifacts PVC holds the tiny model at the path the Deployment names), the image's Python and ENV become
this checkout's environments (main .venv for serve/run.py, .venv-serve for vLLM), the pod's network namespace
becomes loopback on a free port. Then the kubelet's checks: the startup probe (GET /health on the named port),
the readiness exec probe (/v1/models with the key), the liveness probe; the KEDA trigger's metric is on /metrics
with the served model's label; SIGTERM stops everything within the grace period.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from fixtures.k8s import ROOT, SERVE_PY, LocalPod, command_line, container_env, find, image_env
from personagpt.network import free_port


def _get(url: str, headers: dict | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0, b""


def _localize(argv: list[str], pod: LocalPod) -> list[str]:
    """Image paths -> this checkout: `python3` is the image's Python (here: the main environment)."""
    prog, *rest = argv
    assert prog == "python3", argv
    return [sys.executable, *(pod.arg(a) for a in rest)]


@pytest.mark.slow
def test_serving_deployment_runs_locally_and_answers_its_probes(rendered, serve_artifact):
    # a short root: vLLM binds unix sockets under its TMPDIR (serve.cache_dir), and those paths max out at 107 bytes
    tmp_path = Path(tempfile.mkdtemp(prefix="k8s-pod-", dir="/tmp"))
    try:
        _run_serving_pod(rendered, serve_artifact, tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _run_serving_pod(rendered, serve_artifact, tmp_path: Path) -> None:
    if not SERVE_PY.is_file():
        pytest.fail(f"{SERVE_PY}: the vLLM serving environment is missing (make setup-serve)")
    docs = rendered["cpu"]
    dep = find(docs, "Deployment", "personagpt-serve")
    pod_spec = dep["spec"]["template"]["spec"]
    fields = {"metadata.name": "personagpt-serve-abc12-xyz34", "metadata.namespace": "personagpt"}
    (init,) = pod_spec["initContainers"]
    (vllm,) = pod_spec["containers"]
    image = {**image_env(ROOT / "k8s" / "images" / "serve.Dockerfile", "cpu"),
             "PERSONAGPT_VLLM_PYTHON": str(SERVE_PY)}  # the image's vLLM Python -> .venv-serve
    base_env = {"PATH": os.environ["PATH"], "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **image}

    # ---- the pod's filesystem: the artifacts PVC holds the model where $(RUN_DIR)/$(SERVE_ARTIFACT) points
    env = container_env(vllm, docs, fields)
    local = LocalPod(pod_spec, vllm, docs, tmp_path / "pod")
    model_path = Path(local.path(f"{env['RUN_DIR']}/{env['SERVE_ARTIFACT']}"))
    model_path.parent.mkdir(parents=True)
    model_path.symlink_to(serve_artifact, target_is_directory=True)

    # ---- init container: waits for the model, which is there
    ienv = container_env(init, docs, fields)
    ilocal = LocalPod(pod_spec, init, docs, tmp_path / "pod")
    proc = subprocess.run(_localize(command_line(init, ienv), ilocal), cwd=ROOT, capture_output=True, text=True,
                          env={**base_env, **{k: ilocal.path(v) for k, v in ienv.items()}}, timeout=120)
    assert proc.returncode == 0 and "is ready (model from stage" in proc.stdout, proc.stderr

    # ---- the vLLM container: its command, args, env; loopback and a free port instead of the pod's network
    port_name = vllm["startupProbe"]["httpGet"]["port"]
    assert port_name == vllm["livenessProbe"]["httpGet"]["port"]
    container_port = next(p["containerPort"] for p in vllm["ports"] if p["name"] == port_name)
    assert env["SERVE_PORT"] == str(container_port)
    port = free_port()
    env["SERVE_PORT"] = str(port)
    serve_yaml = local.mounts["/etc/personagpt"] / "serve.yaml"
    assert "host: 0.0.0.0" in serve_yaml.read_text()
    serve_yaml.write_text(serve_yaml.read_text().replace("host: 0.0.0.0", "host: 127.0.0.1"))
    local.rewrite_files()  # serve.cache_dir: /cache/serve -> the pod's local cache volume
    assert str(local.mounts["/cache"]) in serve_yaml.read_text()
    run_env = {**base_env, **{k: local.path(v) for k, v in env.items()}}
    argv = _localize(command_line(vllm, env), local)
    assert argv[1:3] == ["serve/run.py", "--artifact"] and argv[3] == str(model_path)
    grace = pod_spec["terminationGracePeriodSeconds"] - vllm["lifecycle"]["preStop"]["sleep"]["seconds"]
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    server = subprocess.Popen(argv, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(server.stdout), daemon=True).start()
    try:
        # startup probe: GET /health until 200, within periodSeconds x failureThreshold
        probe = vllm["startupProbe"]
        budget = probe["periodSeconds"] * probe["failureThreshold"]
        while True:
            assert server.poll() is None, "server exited during startup:\n" + "".join(lines[-80:])
            code, _ = _get(f"{url}{probe['httpGet']['path']}", timeout=probe["timeoutSeconds"])
            if code == 200:
                break
            assert time.monotonic() - t0 < budget, f"startup probe failed for {budget} s:\n" + "".join(lines[-80:])
            time.sleep(2)
        startup_s = time.monotonic() - t0
        # readiness probe: the exec command itself, in the container's environment
        ready = vllm["readinessProbe"]
        cmd = [sys.executable if a == "python3" else a for a in ready["exec"]["command"]]
        deadline = time.monotonic() + ready["periodSeconds"] * ready["failureThreshold"]
        while True:
            rp = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=ready["timeoutSeconds"] + 5)
            if rp.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert rp.returncode == 0, f"readiness probe failed: {rp.stderr}"
        # ... and it fails with a wrong key: the server enforces the Secret's key on /v1/*
        bad = subprocess.run(cmd, env={**run_env, "VLLM_API_KEY": "wrong"}, capture_output=True, text=True,
                             timeout=30)
        assert bad.returncode != 0 and "401" in bad.stderr
        # liveness probe
        assert _get(f"{url}{vllm['livenessProbe']['httpGet']['path']}")[0] == 200
        # a real chat completion with the key, as a client of the Service would send
        key = env["VLLM_API_KEY"]
        body = json.dumps({"model": env["SERVED_MODEL_NAME"], "max_tokens": 8, "temperature": 0,
                           "messages": [{"role": "user", "content": "hi, how are you?"}]}).encode()
        req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            answer = json.load(r)
        assert answer["model"] == env["SERVED_MODEL_NAME"] and answer["usage"]["completion_tokens"] >= 1
        # the autoscaler's metric, with the label its query selects on (Prometheus scrapes the annotated port/path)
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        code, metrics = _get(f"http://127.0.0.1:{port}{ann['prometheus.io/path']}")
        assert code == 200
        so = find(docs, "ScaledObject", "personagpt-serve")
        query = so["spec"]["triggers"][0]["metadata"]["query"]
        metric = query.split("(", 1)[1].split("{", 1)[0]
        selector = query.split("{", 1)[1].split("}", 1)[0]
        samples = [ln for ln in metrics.decode().splitlines() if ln.startswith(metric + "{")]
        assert samples and any(selector in ln for ln in samples), (query, samples)
        # serve/run.py reports ready after its own real completion (its smoke request may still be in flight when
        # /health already answers, so give it the readiness probe's budget)
        def ready_event() -> bool:
            return any(ln.startswith("{") and json.loads(ln).get("event") == "ready" for ln in list(lines))

        deadline = time.monotonic() + ready["periodSeconds"] * ready["failureThreshold"]
        while not ready_event() and time.monotonic() < deadline and server.poll() is None:
            time.sleep(1)
        assert ready_event(), lines[-40:]
    finally:
        # the kubelet's stop: SIGTERM to the container's main process, SIGKILL after the grace period
        t1 = time.monotonic()
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            rc = server.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(30)
            rc = None
        stop_s = time.monotonic() - t1
        try:
            os.killpg(server.pid, 0)
            leftover = True
        except ProcessLookupError:
            leftover = False
        if leftover:
            os.killpg(server.pid, signal.SIGKILL)
    assert rc == 0, f"serve/run.py exited {rc} after SIGTERM (grace {grace} s):\n" + "".join(lines[-40:])
    assert not leftover, "processes of the server's group outlived SIGTERM"
    print(f"\nk8s serving container: /health after {startup_s:.0f} s, stopped {stop_s:.1f} s after SIGTERM",
          file=sys.stderr)
