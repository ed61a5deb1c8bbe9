"""The install files agree: pyproject's ranges admit the tested pins, the conda envs pin the same versions,
and CI installs with the tested pins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pyproject() -> dict:
    """The parsed pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(group: str) -> list[Requirement]:
    """The base dependencies (`group` "") or those of one extra."""
    project = pyproject()["project"]
    lines = project["dependencies"] if not group else project["optional-dependencies"][group]
    return [Requirement(line) for line in lines]


def pinned_versions() -> dict[str, Version]:
    """envs/tested.txt as {package: version}."""
    pins = {}
    for line in (ROOT / "envs" / "tested.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"envs/tested.txt: {line} is not an exact pin"
            pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def conda_pins(name: str) -> dict[str, Version]:
    """The pip pins of envs/<name>.yaml as {package: version} (local labels such as +cpu dropped)."""
    deps = yaml.safe_load((ROOT / "envs" / f"{name}.yaml").read_text())["dependencies"]
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    pins = {}
    for line in pip:
        if not line.startswith("--"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"envs/{name}.yaml: {line} is not pinned"
            pins[canonicalize_name(req.name)] = Version(Version(spec.version).public)
    return pins


@pytest.mark.parametrize("group", ["", "cpu", "dev"])
def test_tested_pins_satisfy_the_ranges(group: str) -> None:
    pins = pinned_versions()
    for req in requirements(group):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} has no pin in envs/tested.txt"
        assert req.specifier.contains(pins[name]), f"envs/tested.txt pins {name}=={pins[name]} outside {req}"


def test_torch_is_a_range_so_an_installed_build_is_kept() -> None:
    for req in requirements(""):
        if req.name in ("torch", "torchvision"):
            assert all(spec.operator != "==" for spec in req.specifier), f"{req}: a pin would replace the user's torch"
            assert len(req.specifier) == 2, f"{req}: give a lower and an upper bound"


@pytest.mark.parametrize(("env", "faiss"), [("cpu", "faiss-cpu"), ("gpu", "faiss-gpu")])
def test_conda_envs_pin_the_tested_versions(env: str, faiss: str) -> None:
    pins, tested = conda_pins(env), pinned_versions()
    tested["faiss-gpu"] = tested["faiss-cpu"]  # one faiss release, two builds
    assert faiss in pins and ({"faiss-cpu", "faiss-gpu"} - {faiss}).isdisjoint(pins), f"envs/{env}.yaml: one faiss, {faiss}"
    for name, version in pins.items():
        assert tested.get(name) == version, f"envs/{env}.yaml pins {name}=={version}, envs/tested.txt {tested.get(name)}"
    for req in requirements(""):
        assert canonicalize_name(req.name) in pins or req.name.startswith("snakemake"), f"envs/{env}.yaml lacks {req.name}"


def test_gpu_extra_admits_the_gpu_env_faiss() -> None:
    (faiss,) = requirements("gpu")
    assert faiss.name == "faiss-gpu" and faiss.specifier.contains(conda_pins("gpu")["faiss-gpu"])


def test_ci_installs_the_pinned_versions() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "pip install --quiet -e '.[cpu,dev]' -c envs/tested.txt" in script
    assert script.rstrip().endswith(". .venv/bin/activate && pytest")
