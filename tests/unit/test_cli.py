"""`useg --help` lists user commands before stage commands; --version; user commands show defaults, no internal
flags; the parser imports no heavy library (every job's start-up builds it)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import pytest

from useg import __version__
from useg.cli import USER_COMMANDS, main


def command_help(name: str) -> str:
    """What `useg NAME --help` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([name, "--help"])
    return out.getvalue()


def test_help_lists_user_commands_first_then_stages(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    user, stages = text.split("user commands:")[1].split("stage commands")
    listed = [line.split()[0] for line in user.strip().splitlines()]
    assert listed == list(USER_COMMANDS)
    stage_names = [line.split()[0] for line in stages.splitlines()[1:] if line.startswith("  ")]
    assert {"features", "kmeans-fit", "transfgu-train", "evaluate"} <= set(stage_names)
    assert set(stage_names).isdisjoint(USER_COMMANDS)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"useg {__version__}"


@pytest.mark.parametrize("name", USER_COMMANDS)
def test_user_commands_have_no_internal_flags(name: str):
    assert "--params" not in command_help(name)


def test_defaults_are_shown_and_required_options_have_none():
    text = " ".join(command_help("predict").split())
    assert "images per forward pass (default: 8)" in text and "(default: auto)" in text
    assert "folder of images (default" not in text  # --images is required: no default shown
    assert "(default: None)" not in text and "(default: [])" not in text
    assert "JSON config slice of this stage (default: {})" in " ".join(command_help("kmeans-fit").split())


HEAVY_LIBRARIES = ("torch", "torchvision", "timm", "zarr", "numpy", "scipy", "PIL", "cv2", "faiss", "sklearn")


def test_the_parser_and_help_import_no_heavy_library():
    script = (
        "import contextlib, io, sys\n"
        "from useg.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(' '.join(sorted({name.split('.')[0] for name in sys.modules})))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split())
    assert "useg" in loaded and loaded.isdisjoint(HEAVY_LIBRARIES), sorted(loaded & set(HEAVY_LIBRARIES))
