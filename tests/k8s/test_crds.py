"""KubeRay's CRDs as the repository holds them, and the schema check every rendered manifest passes:
what the API server would accept from ``kubectl apply`` (strict field validation)."""

from __future__ import annotations

import copy
import hashlib
import re

import pytest

from tests.k8s.manifests import (
    CRDS,
    RAY_KINDS,
    crd_validators,
    load_yaml,
    schema_errors,
    to_json_schema,
)


def test_the_crds_are_the_ones_their_notes_describe() -> None:
    notes = (CRDS / "README.md").read_text()
    version = re.search(r"KubeRay \*\*(v[\d.]+)\*\*", notes)
    assert version, "k8s/crds/README.md names the KubeRay version of the CRDs"
    paths = sorted(CRDS.glob("*.yaml"))
    assert [p.name for p in paths] == ["ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml", "ray.io_rayservices.yaml"]
    for path in paths:
        crd = load_yaml(path)
        assert crd["kind"] == "CustomResourceDefinition"
        generator = crd["metadata"]["annotations"]["controller-gen.kubebuilder.io/version"]
        assert f"controller-gen.kubebuilder.io/version: {generator}" in notes
        assert hashlib.sha256(path.read_bytes()).hexdigest() in notes, f"{path.name} differs from the copy noted"


def test_every_ray_kind_has_a_served_v1_schema() -> None:
    served = crd_validators()
    for kind in RAY_KINDS:
        assert ("ray.io/v1", kind) in served


def test_the_conversion_keeps_what_kubernetes_keeps() -> None:
    from jsonschema import Draft202012Validator

    schema = to_json_schema({
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {
                "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "replicas": {"type": "integer", "format": "int32", "default": 1},
                "note": {"type": "string", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "bare": {"x-kubernetes-int-or-string": True},
            }},
        },
    })
    validator = Draft202012Validator(schema)
    good = {"metadata": {"name": "x", "anything": 1},
            "spec": {"port": "http", "replicas": 2, "note": None, "free": {"any": {"thing": 1}},
                     "labels": {"a": "b"}, "bare": 3}}
    assert not list(validator.iter_errors(good))
    for bad in ({"spec": {"prot": 80}}, {"spec": {"replicas": "2"}}, {"spec": {"labels": {"a": 1}}},
                {"spec": {"port": 1.5}}, {"spec": {"bare": [1]}}, {"extra": 1}):
        assert list(validator.iter_errors(bad)), bad


def _train_sft(h100) -> dict:
    return next(j for j in h100.rayjobs if j["metadata"]["name"] == "reasoner-train-sft")


def test_a_rendered_rayjob_validates(h100) -> None:
    assert schema_errors(_train_sft(h100)) == []


def _container(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


MUTATIONS = {
    "unknown field in spec": (lambda j: j["spec"].__setitem__("entrypointNumGPUs", 1),
                              "spec", "Additional properties are not allowed"),
    "unknown field in a container": (lambda j: _container(j).__setitem__("imagePullPolicyy", "Always"),
                                     "containers.0", "Additional properties are not allowed"),
    "integer given as a string": (lambda j: j["spec"].__setitem__("backoffLimit", "2"),
                                  "spec.backoffLimit", "is not of type 'integer'"),
    "rayStartParams value not a string": (
        lambda j: j["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"].__setitem__("num-cpus", 0),
        "rayStartParams.num-cpus", "is not of type 'string'"),
    "a quantity Kubernetes cannot parse": (lambda j: _container(j)["resources"]["limits"].__setitem__("memory", "64GB"),
                                           "resources.limits.memory", "does not match"),
    "a required field missing": (lambda j: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].pop("template"),
                                 "workerGroupSpecs.0", "'template' is a required property"),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=list(MUTATIONS))
def test_a_planted_mistake_is_refused(h100, mutation: str) -> None:
    change, where, message = MUTATIONS[mutation]
    job = copy.deepcopy(_train_sft(h100))
    change(job)
    errors = schema_errors(job)
    assert any(where in e and message in e for e in errors), errors
