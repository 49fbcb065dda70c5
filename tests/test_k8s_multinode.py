"""The training JobSet's pods, run locally as separate "nodes", form one DeepSpeed world and train the teacher.

Each pod of the cpu overlay's JobSet is started from its own rendered command (init: none needed, the dataset is
in place), with its own environment (pipeline ConfigMap, downward-API fields the Job and JobSet controllers set:
completion index -> NODE_RANK, coordinator -> MASTER_ADDR), its own /tmp, and the shared artifacts volume. The
only changes are the ones a cluster would make different from this machine: the coordinator's DNS name and the
pod network become loopback (GLOO_SOCKET_IFNAME=lo, a free rendezvous port instead of 29500, which other local
jobs may hold), the image's /opt/venv is this checkout's .venv, and the pipeline ConfigMap points at a short
tiny-preset run (CONFIG, here a file on the artifacts volume, and RUN_DIR: the values a user edits), so two
2-rank "nodes" finish in about a minute.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fixtures.artifacts import TINY
from fixtures.k8s import ROOT, LocalPod, command_line, container_env, find, image_env, jobset_pod_fields
from personagpt.artifacts import read_manifest
from personagpt.network import free_port

SHORT_RUN = {"max_steps": 4, "micro_batch_size": 4, "grad_accum_steps": 1, "eval_every": 0, "eval_samples": 16,
             "eval_before": False, "save_every": 2, "zero_stage": 2, "warmup_steps": 1, "max_length": 128}


@pytest.mark.slow
def test_jobset_pods_train_as_one_deepspeed_world(rendered, tiny_dataset, tmp_path):
    docs = copy.deepcopy(rendered["cpu"])
    js = find(docs, "JobSet", "personagpt-train")
    job = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    nodes, pod_spec = job["parallelism"], job["template"]["spec"]
    (c,) = pod_spec["containers"]
    # the ConfigMap values a user changes for another run: preset and run folder
    cfg = yaml.safe_load(TINY.read_text())
    cfg["data"]["max_conversations"] = 120
    cfg["train"] = {**cfg.get("train", {}), **SHORT_RUN}
    pipeline = find(docs, "ConfigMap", "personagpt-pipeline")
    pipeline["data"].update({"CONFIG": "/artifacts/tiny/tiny-k8s.yaml", "RUN_DIR": "/artifacts/tiny"})
    ranks = int(pipeline["data"]["RANKS_PER_NODE"])
    # the shared volume holds that config and the dataset artifact where the data Job writes it
    pvc = tmp_path / "pod-0" / "artifacts"
    (pvc / "tiny").mkdir(parents=True)
    (pvc / "tiny" / "tiny-k8s.yaml").write_text(yaml.safe_dump(cfg))
    (pvc / "tiny" / "data").symlink_to(tiny_dataset, target_is_directory=True)
    image = image_env(ROOT / "k8s" / "images" / "train.Dockerfile", "final")
    port = free_port()
    procs, logs = [], []
    try:
        for i in range(nodes):
            local = LocalPod(pod_spec, c, docs, tmp_path / f"pod-{i}")
            local.mounts["/artifacts"] = pvc  # one PVC, mounted by every pod
            env = container_env(c, docs, jobset_pod_fields(js, 0, 0, i))
            assert env["NODE_RANK"] == str(i)
            coordinator = env["MASTER_ADDR"]
            assert coordinator.startswith(f"{js['metadata']['name']}-node-0-0.")
            argv = command_line(c, env)
            assert argv[0] == "python3" and argv[argv.index("--master_addr") + 1] == coordinator
            argv[argv.index("--master_addr") + 1] = "127.0.0.1"  # cluster DNS -> loopback
            argv[argv.index("--master_port") + 1] = str(port)
            argv = [sys.executable, *(local.arg(a) for a in argv[1:])]
            run_env = {**{k: local.path(v) for k, v in env.items()}, **{k: v for k, v in image.items() if k not in (
                "PATH", "VIRTUAL_ENV")}, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
            log = open(tmp_path / f"pod-{i}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen(argv, cwd=ROOT, env=run_env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        rcs = [p.wait(timeout=900) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in logs:
            log.close()
    out = "\n".join(f"--- pod {i} ---\n" + (tmp_path / f"pod-{i}.log").read_text()[-3000:] for i in range(nodes))
    assert rcs == [0] * nodes, out
    assert "no complete checkpoint" in (tmp_path / "pod-0.log").read_text()  # first start: no --resume
    teacher = pvc / "tiny" / "teacher"
    manifest = read_manifest(teacher, kind="model")
    assert manifest["world_size"] == nodes * ranks, manifest.get("world_size")
    assert (pvc / "tiny" / "train" / "checkpoints" / "latest").is_file()
    assert list(teacher.glob("*.safetensors"))
