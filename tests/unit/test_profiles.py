"""`useg install-profile`: the shipped profiles, installed where Snakemake looks them up by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_profile_dir

from useg.cli import main
from useg.errors import ConfigError
from useg.profiles.install import install_profile


def test_named_profile_is_found_by_snakemake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["install-profile", "slurm", "--partition", "gpu", "--account", "proj42"]) == 0
    assert "--profile slurm" in capsys.readouterr().out
    folder, config_file = get_profile_dir("slurm")
    assert config_file == tmp_path / "snakemake/slurm/config.yaml"
    profile = yaml.safe_load(config_file.read_text())
    assert profile["executor"] == "slurm"
    assert profile["default-resources"]["slurm_partition"] == "gpu"
    assert profile["default-resources"]["slurm_account"] == "proj42"


def test_placeholders_are_reported_and_edits_are_not_overwritten(tmp_path: Path, capsys):
    assert main(["install-profile", "slurm", "--dest", str(tmp_path)]) == 0
    assert "CHANGE_ME_PARTITION" in capsys.readouterr().out
    target = tmp_path / "slurm/config.yaml"
    target.write_text(target.read_text().replace("CHANGE_ME_PARTITION", "mine"))
    with pytest.raises(ConfigError, match="--force"):
        install_profile("slurm", tmp_path)
    install_profile("slurm", tmp_path, force=True, partition="other")
    assert yaml.safe_load(target.read_text())["default-resources"]["slurm_partition"] == "other"


def test_unknown_profile_names_where_it_looked(tmp_path: Path):
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        install_profile("nope", tmp_path)

