"""Every overlay of ``k8s/``, rendered as ``kubectl apply -k`` would send it: valid for KubeRay's CRDs
and for the checks KubeRay makes itself, one image and Ray version throughout, the GPU nodes asked
for as the cluster has them, and secrets referenced by name, never contained."""

from __future__ import annotations

import copy
import re

from tests.k8s.manifests import (
    GPU,
    K8S,
    OVERLAYS,
    RAY_KINDS,
    REPO,
    cluster_spec,
    containers,
    load_yaml,
    load_yaml_all,
    parse_entrypoint,
    pod_resources,
    ray_version,
    render,
    schema_errors,
)

DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = {"RayCluster": 53, "RayJob": 47, "RayService": 47}  # KubeRay's limits (names of the pods it makes)
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "REASONER_API_KEYS")


def ray_docs(overlay) -> list[dict]:
    return [d for d in overlay.docs if d["kind"] in RAY_KINDS]


def test_every_document_is_valid_for_the_api_server(overlay) -> None:
    problems = {}
    for doc in overlay.docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), doc
        if doc["kind"] in RAY_KINDS:
            errors = schema_errors(doc)
            if errors:
                problems[f"{doc['kind']}/{doc['metadata']['name']}"] = errors
    assert not problems, problems


def test_an_overlay_is_a_cluster_a_service_and_jobs(overlay) -> None:
    kinds = sorted(d["kind"] for d in overlay.docs)
    assert set(kinds) == set(RAY_KINDS), f"{overlay.name}: only Ray kinds ship (secrets are referenced), got {kinds}"
    assert kinds.count("RayCluster") == 1 and kinds.count("RayService") == 1


def test_deploying_an_overlay_starts_no_job(overlay) -> None:
    """``kubectl apply -k k8s/overlays/<name>`` brings the cluster and the service; the RayJobs are
    in ``jobs/``, applied one at a time: applied together, every stage would start at once, on
    inputs the earlier stages have not made yet."""
    root = K8S / "overlays" / overlay.name
    assert sorted(d["kind"] for d in render(root)) == ["RayCluster", "RayService"]
    assert {d["kind"] for d in render(root / "jobs")} == {"RayJob"}
    assert len({d["metadata"].get("namespace") for d in overlay.docs}) == 1, f"{overlay.name}: one namespace"


def test_a_component_label_picks_one_manifest(overlay) -> None:
    """``kubectl apply -k ... -l app.kubernetes.io/component=<name>`` applies exactly one manifest:
    ``cluster``, ``serve``, or a stage (``train-sft``) or ``pipeline``."""
    labels = [d["metadata"]["labels"]["app.kubernetes.io/component"] for d in overlay.docs]
    assert len(labels) == len(set(labels)), labels
    for job in overlay.rayjobs:
        stage = parse_entrypoint(job["spec"]["entrypoint"]).stage
        assert job["metadata"]["labels"]["app.kubernetes.io/component"] == stage.replace("_", "-")
        assert job["metadata"]["name"] == f"reasoner-{stage.replace('_', '-')}"


def test_names_are_ones_kuberay_accepts(overlay) -> None:
    for doc in ray_docs(overlay):
        name = doc["metadata"]["name"]
        assert DNS_1035.match(name) and len(name) <= MAX_NAME[doc["kind"]], f"{doc['kind']} name {name!r}"
        assert doc["metadata"].get("namespace"), f"{overlay.name} sets no namespace for {name}"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "reasoner"


def test_clusters_pass_kuberays_own_checks(overlay) -> None:
    for doc in ray_docs(overlay):
        name, spec = f"{doc['kind']}/{doc['metadata']['name']}", cluster_spec(doc)
        assert spec["rayVersion"] == ray_version(), f"{name}: rayVersion is not pyproject's Ray"
        head = spec["headGroupSpec"]
        assert head["rayStartParams"].get("num-cpus") == "0", f"{name}: work would be scheduled on the head"
        groups = [head] + spec.get("workerGroupSpecs", [])
        for group in groups:
            params = group.get("rayStartParams", {})
            assert not (group.get("resources") and {"num-cpus", "num-gpus", "memory", "resources"} & set(params)), \
                f"{name}: a group sets resources both in rayStartParams and resources"
            assert "labels" not in params, f"{name}: rayStartParams labels are refused; use the group's labels"
            assert group["template"]["spec"].get("restartPolicy", "Never") == "Never"
        names = [g["groupName"] for g in spec.get("workerGroupSpecs", [])]
        assert len(names) == len(set(names)), f"{name}: worker group names repeat"
        for group in spec.get("workerGroupSpecs", []):
            replicas = group.get("replicas", group["minReplicas"])
            assert 0 <= group["minReplicas"] <= replicas <= group["maxReplicas"], f"{name}/{group['groupName']}"
        if spec.get("enableInTreeAutoscaling"):
            options = spec.get("autoscalerOptions", {})
            assert options.get("version") == "v2" and options.get("idleTimeoutSeconds", 0) > 0, \
                f"{name}: the autoscaler runs v2 with an idle timeout (idle nodes go away)"
        else:
            assert not any(g.get("idleTimeoutSeconds") for g in spec.get("workerGroupSpecs", []))
        for where, container in containers(doc):
            env = {e["name"] for e in container.get("env", [])}
            assert "RAY_enable_autoscaler_v2" not in env, f"{name}/{where}: use autoscalerOptions.version"


def test_one_image_throughout(overlay) -> None:
    images = {c["image"] for doc in ray_docs(overlay) for _, c in containers(doc)}
    assert len(images) == 1, f"{overlay.name}: head, workers and submitters run different images {images}"
    name, _, tag = images.pop().rpartition(":")
    assert name and tag and tag != "latest"
    assert tag.endswith({"dev": "-cpu", "h100": "-cu128"}.get(overlay.name, "")), \
        f"{overlay.name}: tag {tag!r} is not the image of its Dockerfile (cluster/)"


def _gpu_limits(container: dict) -> tuple[str | None, str | None]:
    resources = container.get("resources", {})
    return resources.get("limits", {}).get(GPU), resources.get("requests", {}).get(GPU)


def test_gpus_are_asked_for_as_nodes_have_them(overlay) -> None:
    for doc in ray_docs(overlay):
        spec = cluster_spec(doc)
        head = spec["headGroupSpec"]
        assert _gpu_limits(head["template"]["spec"]["containers"][0]) == (None, None), "the head holds no GPU"
        for group in spec.get("workerGroupSpecs", []):
            pod = group["template"]["spec"]
            limit, request = _gpu_limits(pod["containers"][0])
            where = f"{doc['kind']}/{doc['metadata']['name']}/{group['groupName']}"
            if overlay.name == "dev":
                assert limit is None and request is None, f"{where}: the dev cluster has no GPUs"
                continue
            if limit is None:
                continue
            assert request in (None, limit), f"{where}: GPU requests and limits differ"
            assert pod_resources(group).gpus == float(limit) == 8, f"{where}: a worker pod is a node of 8 H100"
            assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, where
            assert any(t.get("key") == GPU and t.get("effect") == "NoSchedule" for t in pod["tolerations"]), where


def _pod_without_env(group: dict) -> dict:
    template = copy.deepcopy(group["template"])
    for container in template["spec"]["containers"]:
        container.pop("env", None)
        container.pop("ports", None)
    return template


def test_groups_of_one_name_run_one_pod(overlay) -> None:
    """A worker group (or the head) looks the same in every manifest: one definition of an H100
    node, of a CPU worker, of the head (the service's API key and ports aside)."""
    seen: dict[str, tuple[str, dict]] = {}
    for doc in ray_docs(overlay):
        spec = cluster_spec(doc)
        for group in [{"groupName": "head", **spec["headGroupSpec"]}] + spec.get("workerGroupSpecs", []):
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            pod = _pod_without_env(group)
            first = seen.setdefault(group["groupName"], (where, pod))
            assert pod == first[1], f"{overlay.name}: group {group['groupName']} of {where} differs from {first[0]}'s"


def referenced_secrets(overlay) -> set[str]:
    names = set()
    for doc in ray_docs(overlay):
        for _, container in containers(doc):
            names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                      if "secretKeyRef" in e.get("valueFrom", {})}
    return names


def test_secrets_are_referenced_never_contained(overlay) -> None:
    for doc in ray_docs(overlay):
        for where, container in containers(doc):
            for env in container.get("env", []):
                assert env["name"] not in SECRET_KEYS or "value" not in env, \
                    f"{doc['metadata']['name']}/{where}: {env['name']} is written out, not taken from a secret"
            refs = {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
            assert {"reasoner-object-store", "reasoner-openai"} <= refs, \
                f"{doc['metadata']['name']}/{where}: every Ray pod reaches the bucket and the teacher"
    example = {s["metadata"]["name"] for s in load_yaml_all(K8S / "secrets.example.yaml")}
    assert referenced_secrets(overlay) <= example, "k8s/secrets.example.yaml lists every secret the manifests use"


def test_the_production_api_is_never_open(h100) -> None:
    service = h100.one("RayService")
    for where, container in containers(service):
        keys = [e for e in container.get("env", []) if e["name"] == "REASONER_API_KEYS"]
        assert keys, f"{where}: REASONER_API_KEYS is missing: the API would accept any request"
        ref = keys[0]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "reasoner-api-keys" and not ref.get("optional", False), where


def test_the_secrets_example_holds_placeholders_only() -> None:
    secrets = load_yaml_all(K8S / "secrets.example.yaml")
    assert secrets and all(s["kind"] == "Secret" and s["apiVersion"] == "v1" for s in secrets)
    for secret in secrets:
        assert "data" not in secret, "stringData only: readable placeholders, never encoded values"
        for key, value in secret["stringData"].items():
            where = f"{secret['metadata']['name']}.{key}"
            assert re.fullmatch(r"[^<>]*(<[^<>]+>[^<>]*)+", value), f"{where} is not a placeholder"


def _kustomization_refs(path) -> set:
    data = load_yaml(path)
    base = path.parent
    refs = {(base / r).resolve() for r in data.get("resources", []) + data.get("components", [])}
    refs |= {(base / p["path"]).resolve() for p in data.get("patches", []) if "path" in p}
    return refs


def test_every_manifest_file_loads_and_ships() -> None:
    """Every YAML file under k8s/ parses, and each is a kustomization, part of one or the secrets
    example (the CRDs, for the tests, are read by test_crds): nothing lies there that no overlay deploys."""
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    referenced = set().union(*(_kustomization_refs(k) for k in kustomizations))
    for path in sorted(K8S.rglob("*.yaml")):
        if path.parent == K8S / "crds":
            continue
        assert load_yaml_all(path), f"{path} is empty"
        if path.name not in ("kustomization.yaml", "secrets.example.yaml"):
            assert path.resolve() in referenced, f"{path.relative_to(REPO)} is in no kustomization"
    for path in referenced:
        assert path.exists(), f"a kustomization names {path}, which does not exist"


def test_the_overlays_are_dev_and_h100() -> None:
    assert [p.name for p in OVERLAYS] == ["dev", "h100"]
