"""What the k8s tests read: the overlays as ``kubectl kustomize`` renders them, KubeRay's CRD schemas
as JSON Schema, and the Ray resources each job stage and served deployment asks for.

The CRD schemas are checked as ``kubectl apply`` checks them (strict field validation): a field a
schema does not declare is refused unless the schema keeps unknown fields
(``x-kubernetes-preserve-unknown-fields``). CEL rules (``x-kubernetes-validations``) are not
evaluated; the checks KubeRay's webhook and controller make that the tests need are written out
in the tests themselves.
"""

from __future__ import annotations

import functools
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CRDS = K8S / "crds"
CLUSTER = REPO / "cluster"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
GPU = "nvidia.com/gpu"

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are 3 MB: libyaml reads them in a second


def load_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_Loader) if doc]


def ray_version() -> str:
    """The Ray version pyproject.toml pins (``ray[...]==X``): the clusters' and the images' too."""
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(re.search(r"==([\d.]+)", d).group(1) for d in deps if d.startswith("ray["))


# ---------------------------------------------------------------------------------------- rendering


def kubectl() -> str | None:
    return shutil.which("kubectl")


@functools.cache
def render(overlay: Path) -> tuple[dict, ...]:
    """The documents ``kubectl kustomize <overlay>`` prints (as ``kubectl apply -k`` would send them)."""
    out = subprocess.run([kubectl() or "kubectl", "kustomize", str(overlay)], check=False, capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return tuple(doc for doc in yaml.load_all(out.stdout, Loader=_Loader) if doc)


@dataclass(frozen=True)
class Rendered:
    """One overlay's rendered documents."""

    name: str
    docs: tuple[dict, ...]

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d.get("kind") == kind]

    @property
    def rayjobs(self) -> list[dict]:
        return self.of_kind("RayJob")

    def one(self, kind: str) -> dict:
        found = self.of_kind(kind)
        assert len(found) == 1, f"{self.name}: {len(found)} {kind}s, expected one"
        return found[0]


# ------------------------------------------------------------------------------------ CRD schemas

_ANNOTATIONS = {"description", "default", "example", "externalDocs", "format", "nullable", "title"}
_SUBSCHEMA = {"items", "additionalProperties", "not"}
_SUBSCHEMAS = {"allOf", "anyOf", "oneOf"}


def to_json_schema(node: dict[str, Any], root: bool = True) -> dict[str, Any]:
    """An OpenAPI v3 structural schema (a CRD's ``openAPIV3Schema``) as JSON Schema that refuses what
    the API server's strict field validation refuses: undeclared fields of an object, unless it has
    ``x-kubernetes-preserve-unknown-fields``. ``x-kubernetes-int-or-string`` becomes integer or
    string, ``nullable`` adds null. The root's ``metadata`` (ObjectMeta) stays open: the API server
    checks it itself."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: ({} if root and name == "metadata" else to_json_schema(sub, root=False))
                        for name, sub in value.items()}
        elif key in _SUBSCHEMA:
            out[key] = to_json_schema(value, root=False) if isinstance(value, dict) else value
        elif key in _SUBSCHEMAS:
            out[key] = [to_json_schema(sub, root=False) for sub in value]
        elif key in _ANNOTATIONS or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    elif node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (node.get("type") == "object" and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd_validators() -> dict[tuple[str, str], Any]:
    """A JSON Schema validator per (apiVersion, kind) served by the CRDs of ``k8s/crds``."""
    from jsonschema import Draft202012Validator

    validators = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = load_yaml(path)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = to_json_schema(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = Draft202012Validator(schema)
    return validators


def schema_errors(doc: dict) -> list[str]:
    """Why the API server would refuse ``doc`` by its CRD's schema, one line per problem (path: message)."""
    validator = crd_validators()[(doc["apiVersion"], doc["kind"])]
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


# ------------------------------------------------------------------------------------- clusters


def cluster_spec(doc: dict) -> dict:
    """The RayCluster spec inside a RayCluster, a RayJob or a RayService."""
    spec = doc["spec"]
    return {"RayCluster": lambda: spec, "RayJob": lambda: spec["rayClusterSpec"],
            "RayService": lambda: spec["rayClusterConfig"]}[doc["kind"]]()


def containers(doc: dict) -> Iterator[tuple[str, dict]]:
    """(where, container) for every container of a Ray document's pod templates."""
    spec = cluster_spec(doc)
    for c in spec["headGroupSpec"]["template"]["spec"]["containers"]:
        yield "head", c
    for group in spec.get("workerGroupSpecs", []):
        for c in group["template"]["spec"]["containers"]:
            yield group["groupName"], c
    submitter = doc["spec"].get("submitterPodTemplate") if doc["kind"] == "RayJob" else None
    for c in (submitter or {}).get("spec", {}).get("containers", []):
        yield "submitter", c


def quantity(value: Any) -> float:
    """A CPU or GPU quantity ("88", 8, "500m") as a number."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@dataclass(frozen=True)
class Bundle:
    """Ray resources one task, actor, Train worker or replica reserves (or one pod offers)."""

    cpus: float
    gpus: float = 0.0


def pod_resources(group: dict) -> Bundle:
    """What a head or worker pod offers Ray: rayStartParams' num-cpus / num-gpus, else its Ray
    container's limits, as KubeRay derives them."""
    container = group["template"]["spec"]["containers"][0]
    limits = {**container.get("resources", {}).get("requests", {}), **container.get("resources", {}).get("limits", {})}
    params = group.get("rayStartParams", {})
    cpus = quantity(params.get("num-cpus", limits.get("cpu", 0)))
    gpus = quantity(params.get("num-gpus", limits.get(GPU, 0)))
    return Bundle(cpus, gpus)


def worker_pods(spec: dict) -> list[Bundle]:
    """Every worker pod the cluster can have at once: maxReplicas of each group under the
    autoscaler, else its replicas."""
    autoscaled = spec.get("enableInTreeAutoscaling", False)
    pods = []
    for group in spec.get("workerGroupSpecs", []):
        count = group["maxReplicas"] if autoscaled else group.get("replicas", group["minReplicas"])
        pods += [pod_resources(group)] * count
    return pods


def fits(bundles: list[Bundle], pods: list[Bundle]) -> bool:
    """Whether ``bundles`` can all be placed on ``pods`` at once (first fit, largest first)."""
    free = [[p.cpus, p.gpus] for p in pods]
    for b in sorted(bundles, key=lambda b: (b.gpus, b.cpus), reverse=True):
        for room in free:
            if room[0] >= b.cpus and room[1] >= b.gpus:
                room[0] -= b.cpus
                room[1] -= b.gpus
                break
        else:
            return False
    return True


# ------------------------------------------------------------------------------ jobs and demand


@dataclass(frozen=True)
class Entrypoint:
    """``python -m jobs.<stage> --config <yaml> [key=value ...]``, parsed."""

    module: str
    config: str
    overrides: tuple[str, ...]

    @property
    def stage(self) -> str:
        return self.module.removeprefix("jobs.")

    @property
    def run_dir(self) -> str | None:
        return next((o.split("=", 1)[1] for o in self.overrides if o.startswith("run_dir=")), None)


def parse_entrypoint(command: str) -> Entrypoint:
    """The job module, config and overrides of a RayJob's entrypoint; ValueError if it is not one
    plain ``python -m jobs.<stage> --config <yaml> ...`` command for the shell."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = list(lexer)
    operators = [w for w in words if w and set(w) <= set("();<>|&")]
    if operators:
        raise ValueError(f"{command!r}: the shell would read {operators} as operators; quote the argument")
    if words[:2] != ["python", "-m"] or len(words) < 5 or words[3] != "--config":
        raise ValueError(f"{command!r} is not `python -m jobs.<stage> --config <yaml> [key=value ...]`")
    if not all("=" in w for w in words[5:]):
        raise ValueError(f"{command!r}: every argument after the config must be a key=value override")
    return Entrypoint(words[2], words[4], tuple(words[5:]))


def engine_bundle(config) -> Bundle:
    return Bundle(config.engine.cpus_per_engine, config.engine.gpus_per_engine)


def _training(section) -> list[Bundle]:
    return [Bundle(section.cpus_per_worker, 1.0 if section.use_gpu else 0.0)] * section.num_workers


def stage_phases(stage: str, config) -> list[list[Bundle]]:
    """What ``jobs/<stage>.py`` asks Ray for with ``config``: phases that run one after another,
    each the bundles that must be placed at once. Stages that run in the driver alone (init_model,
    report) ask for nothing beyond the entrypoint's own reservation."""
    engine = engine_bundle(config)
    if stage in ("make_examples", "build_pairs"):
        return [[Bundle(1.0)]]  # a task of 1 CPU per part: one at least
    if stage == "distill":
        return [[Bundle(1.0)] * config.distill.num_workers]
    if stage in ("init_model", "report"):
        return []
    if stage == "train_sft":
        sft = config.sft
        return ([_training(sft)] + ([[engine]] if sft.select.enabled else [])
                + ([[engine]] if sft.eval.questions else []))
    if stage == "train_dpo":
        dpo = config.dpo
        reference = engine if dpo.reference_backend == "vllm" else Bundle(1.0, 1.0 if dpo.use_gpu else 0.0)
        return [[reference], _training(dpo)] + ([[engine]] if dpo.eval.questions else [])
    if stage == "sample":
        return [[engine] * config.sample.num_engines]
    if stage == "evaluate":
        return [[engine]]  # one model's engine at a time
    if stage == "pipeline":
        return [phase for s in config.stages for phase in stage_phases(s, config)]
    raise ValueError(f"no resource model for jobs.{stage}: add one to tests/k8s/manifests.py (stage_phases)")


def entrypoint_bundle(job: dict) -> Bundle | None:
    """The driver's own reservation (entrypointNumCpus / entrypointNumGpus), or None for a driver
    that reserves nothing (it runs on the head)."""
    spec = job["spec"]
    cpus, gpus = float(spec.get("entrypointNumCpus", 0)), float(spec.get("entrypointNumGpus", 0))
    return Bundle(cpus, gpus) if cpus or gpus else None


def serve_deployments(service: dict) -> list[dict]:
    """The deployments of every application of a RayService's serveConfigV2."""
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    return [d for app in config.get("applications", []) for d in app.get("deployments", [])]
