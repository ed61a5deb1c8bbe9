"""useg: unsupervised semantic segmentation as a staged, cached, offline pipeline."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("useg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+src"
