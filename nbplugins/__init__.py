"""nbplugins: parameterized notebooks, papermill plugins and pipelines for EGI, EOSC and D4Science hubs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nbplugins")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
