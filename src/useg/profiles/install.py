"""Copy a profile from the repository's profiles/ to where Snakemake looks up profiles by name."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from useg.atomic import write_text
from useg.errors import ConfigError

REPO_PROFILES = Path(__file__).resolve().parents[3] / "profiles"
PLACEHOLDERS = {
    "partition": "CHANGE_ME_PARTITION",
    "gpu_partition": "CHANGE_ME_GPU_PARTITION",
    "account": "CHANGE_ME_ACCOUNT",
}
PLACEHOLDER_PREFIX = "CHANGE_ME_"


def user_profiles_dir() -> Path:
    """Snakemake's per-user profile folder: $XDG_CONFIG_HOME/snakemake (default ~/.config/snakemake)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "snakemake"


def find_profile(name: str, source: Path | None = None) -> Path:
    """config.yaml of profile `name` in `source`, the repository's profiles/ or ./profiles."""
    candidates = [source] if source else [REPO_PROFILES, Path.cwd() / "profiles"]
    for folder in candidates:
        if (folder / name / "config.yaml").is_file():
            return folder / name / "config.yaml"
    where = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"no profile {name!r} (looked for {name}/config.yaml in {where}); pass --source PROFILES_DIR")


def fill_placeholders(text: str, values: dict[str, str | None]) -> str:
    """`text` with each placeholder of PLACEHOLDERS whose key `values` sets replaced by its value."""
    for key, placeholder in PLACEHOLDERS.items():
        if values.get(key) is not None:
            text = text.replace(placeholder, values[key])
    return text


def install_profile(
    name: str, dest: Path | None = None, source: Path | None = None, force: bool = False, **values: str | None
) -> Path:
    """Install profile `name` as `<dest>/<name>/` (config.yaml and the files beside it, such as the
    Slurm partition config), filling the placeholders given in `values`; returns its config.yaml."""
    folder = find_profile(name, source).parent
    texts = {path.name: fill_placeholders(path.read_text(), values) for path in sorted(folder.glob("*.yaml"))}
    target = (dest or user_profiles_dir()) / name
    for file_name, text in texts.items():
        path = target / file_name
        if path.exists() and not force and path.read_text() != text:
            raise ConfigError(f"{path} exists and differs (maybe edited for your site); use --force to replace it")
    for file_name, text in texts.items():
        write_text(target / file_name, text)
    return target / "config.yaml"


def remaining_placeholders(path: Path) -> list[str]:
    """Placeholders still to be edited in an installed profile (its config.yaml and the files beside it)."""
    text = "".join(p.read_text() for p in sorted(path.parent.glob("*.yaml")))
    return [p for p in PLACEHOLDERS.values() if p in text]


def partition_names(partition_config: str | Path) -> list[str]:
    """The partitions a Slurm executor partition config (`slurm-partition-config`) lists."""
    data = yaml.safe_load(Path(partition_config).read_text()) or {}
    return list((data.get("partitions") or {}).keys())


def check_slurm_placeholders(values: dict[str, str], partition_config: str | Path | None) -> None:
    """Refuse a Slurm run whose resources (`values`: where -> value) or partition config still hold
    a CHANGE_ME_ placeholder of profiles/slurm, naming where it is and how to fill it."""
    found = [(value, where) for where, value in values.items() if str(value).startswith(PLACEHOLDER_PREFIX)]
    if partition_config:
        where = f"partitions of {partition_config}"
        found += [(name, where) for name in partition_names(partition_config) if name.startswith(PLACEHOLDER_PREFIX)]
    if found:
        listed = "; ".join(f"{value} ({where})" for value, where in found)
        raise ConfigError(
            f"the Slurm profile still names placeholders: {listed}. Replace them with your cluster's "
            "partitions (`sinfo -s` lists them) and account, or install the profile filled in: "
            "`useg install-profile slurm --partition CPU_PARTITION --gpu-partition GPU_PARTITION --account ACCOUNT` "
            "(docs/cluster.md)"
        )
