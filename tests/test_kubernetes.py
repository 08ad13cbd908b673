"""Kubernetes manifests (deploy/kubernetes/), validated offline.

Core objects against the Kubernetes OpenAPI schemas that kubernetes-validate ships (strict:
unknown fields are errors); the Prometheus Operator objects -- ServiceMonitor, Probe and the
PrometheusRule objects generated from alerting/*.yml -- against the operator's schemas
vendored, trimmed, in deploy/kubernetes/schemas/ (see the README there).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import referencing
import yaml
from referencing.jsonschema import DRAFT202012

kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
SCHEMAS = K8S / "schemas"
CORE_FILES = ("config.yaml", "probe-deployment.yaml", "scheduled-statefulset.yaml")
# pod-index label (1.28) and the preStop sleep action (1.30) are used.
KUBERNETES_VERSION = "1.32.0"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def rules_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_rules", K8S / "rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def operator_validator(kind: str) -> jsonschema.Draft202012Validator:
    common = yaml.safe_load((SCHEMAS / "common.yaml").read_text())
    registry = referencing.Registry().with_resource(
        "common.yaml", referencing.Resource.from_contents(common, DRAFT202012)
    )
    schema = {"$id": f"{kind}.yaml", **yaml.safe_load((SCHEMAS / f"{kind}.yaml").read_text())}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def operator_objects() -> list[dict[str, Any]]:
    return docs("monitoring.yaml") + rules_module().objects()


@pytest.mark.parametrize("name", CORE_FILES)
def test_core_manifests_validate_against_the_kubernetes_schemas(name):
    objects = docs(name)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_operator_objects_validate_against_the_vendored_schemas():
    kinds = []
    for obj in operator_objects():
        kinds.append(obj["kind"])
        operator_validator(obj["kind"].lower()).validate(obj)
    assert sorted(set(kinds)) == ["Probe", "PrometheusRule", "ServiceMonitor"]


def test_validation_catches_a_misspelt_field():
    deployment = docs("probe-deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    probe = next(o for o in docs("monitoring.yaml") if o["kind"] == "Probe")
    probe["spec"]["scrapeTimout"] = "10s"
    with pytest.raises(jsonschema.ValidationError, match="scrapeTimout"):
        operator_validator("probe").validate(probe)
    rule = rules_module().objects()[0]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "five minutes"
    with pytest.raises(jsonschema.ValidationError):
        operator_validator("prometheusrule").validate(rule)


def test_prometheusrules_carry_every_rules_file_unchanged():
    by_name = {o["metadata"]["name"]: o for o in rules_module().objects()}
    for name, file in rules_module().FILES.items():
        groups = yaml.safe_load((ROOT / "alerting" / file).read_text())["groups"]
        assert by_name[name]["spec"]["groups"] == groups


def pods() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    out = []
    for name in CORE_FILES:
        for obj in docs(name):
            if obj["kind"] in ("Deployment", "StatefulSet"):
                out.append((obj, obj["spec"]["template"]["spec"]))
    return out


def test_pods_are_hardened_sized_and_probed():
    assert {w["kind"] for w, _ in pods()} == {"Deployment", "StatefulSet"}
    for workload, pod in pods():
        assert pod["securityContext"]["runAsNonRoot"] is True
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
            for mount in c["volumeMounts"]:
                # subPath mounts never see ConfigMap updates: hot reload needs whole dirs.
                assert "subPath" not in mount and mount["readOnly"]
        exporter = pod["containers"][0]
        assert exporter["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
        assert exporter["readinessProbe"]["httpGet"]["path"] == "/-/ready"
        reloader = pod["containers"][1]
        assert "--webhook-url=http://127.0.0.1:10525/-/reload" in reloader["args"]
        if workload["kind"] == "StatefulSet":
            env = {e["name"]: e for e in exporter["env"]}
            assert "--shard=$(SHARD)/$(SHARDS)" in exporter["args"]
            assert int(env["SHARDS"]["value"]) == workload["spec"]["replicas"]
            assert "pod-index" in env["SHARD"]["valueFrom"]["fieldRef"]["fieldPath"]
        else:
            assert "--no-scheduler" in exporter["args"]
    kinds = [o["kind"] for name in CORE_FILES for o in docs(name)]
    assert kinds.count("PodDisruptionBudget") == 2


def test_configmap_holds_a_config_the_exporter_accepts(tmp_path):
    from exporter import config

    text = docs("config.yaml")[0]["data"]["config.yml"]
    secret = tmp_path / "smtp-password"
    secret.write_text("x\n")
    text = text.replace("/etc/smtp-health-exporter/secret/smtp-password", str(secret))
    cfg = config.parse(text, file="config.yaml")
    assert [t.name for t in cfg.targets] == ["smtp.example.com:587", "smtp2.example.com:587"]
