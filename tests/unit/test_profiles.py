"""`useg install-profile`: the shipped profiles, installed where Snakemake looks them up by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.cli import get_profile_dir

from useg.cli import main
from useg.errors import ConfigError
from useg.profiles.install import check_slurm_placeholders, install_profile, partition_names


def test_named_profile_is_found_by_snakemake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    args = ["install-profile", "slurm", "--partition", "cpu", "--gpu-partition", "gpu", "--account", "proj42"]
    assert main(args) == 0
    assert "--profile slurm" in capsys.readouterr().out
    folder, config_file = get_profile_dir("slurm")
    assert config_file == tmp_path / "snakemake/slurm/config.yaml"
    profile = yaml.safe_load(config_file.read_text())
    assert profile["executor"] == "slurm"
    assert profile["default-resources"]["slurm_account"] == "proj42"
    partitions = yaml.safe_load((folder / profile["slurm-partition-config"]).read_text())["partitions"]
    assert partitions == {"cpu": {"max_gpu": 0}, "gpu": {"max_gpu": 8}}, "GPU jobs fit only the GPU partition"
    check_slurm_placeholders(profile["default-resources"], folder / profile["slurm-partition-config"])


def test_placeholders_are_reported_and_edits_are_not_overwritten(tmp_path: Path, capsys):
    assert main(["install-profile", "slurm", "--dest", str(tmp_path)]) == 0
    assert "CHANGE_ME_PARTITION, CHANGE_ME_GPU_PARTITION, CHANGE_ME_ACCOUNT" in capsys.readouterr().out
    target = tmp_path / "slurm/partitions.yaml"
    target.write_text(target.read_text().replace("CHANGE_ME_PARTITION", "mine"))
    with pytest.raises(ConfigError, match="partitions.yaml exists and differs.*--force"):
        install_profile("slurm", tmp_path)
    install_profile("slurm", tmp_path, force=True, partition="other")
    assert partition_names(target) == ["other", "CHANGE_ME_GPU_PARTITION"]


def test_a_placeholder_left_in_the_slurm_profile_is_named_with_the_fix(tmp_path: Path):
    install_profile("slurm", tmp_path, partition="cpu")
    config = tmp_path / "slurm/partitions.yaml"
    with pytest.raises(ConfigError) as error:
        check_slurm_placeholders({"default-resources.slurm_account": "CHANGE_ME_ACCOUNT", "default-resources.mem_mb": 4000}, config)
    message = str(error.value)
    assert "CHANGE_ME_ACCOUNT (default-resources.slurm_account)" in message
    assert f"CHANGE_ME_GPU_PARTITION (partitions of {config})" in message
    assert "CHANGE_ME_PARTITION" not in message and "useg install-profile slurm --partition" in message
    check_slurm_placeholders({"default-resources.slurm_account": "proj"}, None)


def test_unknown_profile_names_where_it_looked(tmp_path: Path):
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        install_profile("nope", tmp_path)

