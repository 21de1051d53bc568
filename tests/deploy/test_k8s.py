"""The Kubernetes manifests under docker/k8s validate against the Kubernetes JSON schemas (strict: unknown
fields are errors) with kubernetes-validate, which ships the schemas in its wheel and so works offline; then
the properties the deployment relies on (probes, security context, volumes, settings) are checked."""

from __future__ import annotations

import copy
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError

from acula.service.settings import Settings
from tests.deploy.tools import DOCKER

K8S = DOCKER / "k8s"
# The oldest Kubernetes still widely run in hospitals' managed clusters, and the newest the package knows.
VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]


def manifests() -> dict[str, dict]:
    """kind -> resource, from every manifest but kustomization.yaml (a kustomize file, not an API object)."""
    resources = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                resources[document["kind"]] = document
    return resources


@pytest.fixture(scope="module")
def resources() -> dict[str, dict]:
    return manifests()


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test: validation must use the bundled schemas."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during validation: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly_offline(resources, version, offline):
    expected = {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert expected <= set(resources)
    for resource in resources.values():
        # Raises ValidationError on a schema violation and SchemaNotFoundError on an unknown kind/apiVersion.
        kubernetes_validate.validate(resource, version, strict=True)


def test_validation_rejects_a_broken_manifest(resources, offline):
    # Control: a misspelt field and a wrong type are both caught.
    typo = copy.deepcopy(resources["Deployment"])
    typo["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(typo, VERSIONS[-1], strict=True)
    wrong_type = copy.deepcopy(resources["Deployment"])
    wrong_type["spec"]["replicas"] = "two"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(wrong_type, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_required_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml", "ingress.yaml"}
    assert listed == on_disk
    assert all((K8S / name).is_file() for name in listed)


def container(resources) -> dict:
    return resources["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def test_probes_use_readyz_and_healthz(resources):
    acula = container(resources)
    assert acula["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert acula["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert acula["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = acula["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "time to verify and warm up"


def test_security_context_and_writable_tmp(resources):
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    acula = container(resources)
    context = acula["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's numeric user (docker/Dockerfile)
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {mount["mountPath"]: mount for mount in acula["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/models"]["readOnly"] is True
    assert "persistentVolumeClaim" in volumes[mounts["/models"]["name"]]
    assert acula["resources"]["requests"] and acula["resources"]["limits"]


def test_settings_are_real_and_consistent(resources):
    data = resources["ConfigMap"]["data"]
    fields = {f"ACULA_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields, f"unknown settings: {sorted(set(data) - fields)}"
    settings = Settings(**{key.removeprefix("ACULA_").lower(): value for key, value in data.items()})
    assert str(settings.bundle).startswith("/models/")
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    # Kubernetes must not kill a pod that is still draining.
    assert pod["terminationGracePeriodSeconds"] > settings.drain_delay_s + settings.graceful_shutdown_s
    # onnxruntime threads match the CPU limit rather than the node's cores.
    cpu_limit = int(container(resources)["resources"]["limits"]["cpu"])
    assert settings.inference_workers * settings.intra_op_threads == cpu_limit
    port = container(resources)["ports"][0]["containerPort"]
    assert port == settings.port == resources["Service"]["spec"]["ports"][0]["port"]


def test_autoscaler_and_disruption_budget_target_the_deployment(resources):
    deployment = resources["Deployment"]
    hpa = resources["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (
        resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        resources["Service"]["spec"]["selector"],
    ):
        assert selector.items() <= labels.items()
    assert resources["PodDisruptionBudget"]["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_ingress_does_not_expose_metrics(resources):
    paths = [path["path"] for rule in resources["Ingress"]["spec"]["rules"] for path in rule["http"]["paths"]]
    assert "/acula/predict" in paths
    assert not any(Path(p).name == "metrics" for p in paths)
