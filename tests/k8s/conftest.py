"""Fixtures of the k8s tests: each overlay of ``k8s/overlays`` (its cluster and service, and its
``jobs/``) rendered once by ``kubectl kustomize``.

Tests that need a rendering are skipped, with the reason, where kubectl is not installed (it is on
the development machines and in CI).
"""

from __future__ import annotations

import pytest

from tests.k8s.manifests import K8S, OVERLAYS, Rendered, kubectl, render


def _rendered(name: str) -> Rendered:
    if kubectl() is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered (kubectl kustomize)")
    root = K8S / "overlays" / name
    return Rendered(name, render(root) + render(root / "jobs"))


@pytest.fixture(scope="session", params=[p.name for p in OVERLAYS])
def overlay(request) -> Rendered:
    """One overlay's rendered documents (every test that takes it runs once per overlay)."""
    return _rendered(request.param)


@pytest.fixture(scope="session")
def h100() -> Rendered:
    """The production overlay, rendered."""
    return _rendered("h100")
