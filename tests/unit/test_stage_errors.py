"""What a failing stage leaves in its log: the clear message of a useg error, the traceback of any other."""

from __future__ import annotations

from useg.cli import main


def test_unexpected_exception_writes_its_traceback_into_the_log(tmp_path):
    log = tmp_path / "stage.log"
    argv = ["kmeans-fit", "--params", "{not json", "--classes", "c.json", "--features", "f.zarr", "--out", str(tmp_path / "o.zarr")]
    assert main([*argv, "--log", str(log)]) == 1
    text = log.read_text()
    assert "useg kmeans-fit failed unexpectedly" in text and "Traceback" in text and "JSONDecodeError" in text
    assert not (tmp_path / "o.zarr").exists()


def test_useg_error_is_logged_as_one_clear_line(tmp_path):
    log = tmp_path / "stage.log"
    (tmp_path / "c.json").write_text('{"classes": [], "things": [], "ignore_index": 255}')
    argv = ["kmeans-fit", "--params", '{"kmeans": {"k": null}, "seed": 0}', "--classes", str(tmp_path / "c.json")]
    assert main([*argv, "--features", "f.zarr", "--out", str(tmp_path / "o.zarr"), "--log", str(log)]) == 2
    text = log.read_text()
    assert "kmeans.k is not set" in text and "Traceback" not in text
