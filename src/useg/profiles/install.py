"""Copy a profile from the repository's profiles/ to where Snakemake looks up profiles by name."""

from __future__ import annotations

import os
from pathlib import Path

from useg.atomic import write_text
from useg.errors import ConfigError

REPO_PROFILES = Path(__file__).resolve().parents[3] / "profiles"
PLACEHOLDERS = {"partition": "CHANGE_ME_PARTITION", "account": "CHANGE_ME_ACCOUNT"}


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


def install_profile(
    name: str, dest: Path | None = None, source: Path | None = None, force: bool = False, **values: str | None
) -> Path:
    """Install profile `name` as `<dest>/<name>/config.yaml`, filling the placeholders given in `values`."""
    text = find_profile(name, source).read_text()
    for key, value in values.items():
        if value is not None:
            text = text.replace(PLACEHOLDERS[key], value)
    target = (dest or user_profiles_dir()) / name / "config.yaml"
    if target.exists() and not force and target.read_text() != text:
        raise ConfigError(f"{target} exists and differs (maybe edited for your site); use --force to replace it")
    write_text(target, text)
    return target


def remaining_placeholders(path: Path) -> list[str]:
    """Placeholders still to be edited in an installed profile."""
    text = path.read_text()
    return [p for p in PLACEHOLDERS.values() if p in text]
