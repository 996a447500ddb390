"""nbplugins: parameterized notebooks, papermill plugins and pipelines for EGI, EOSC and D4Science hubs."""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """``__version__`` is read from the installed metadata on first use (35 ms a process otherwise)."""
    if name != "__version__":
        raise AttributeError(f"module 'nbplugins' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("nbplugins")
    except PackageNotFoundError:  # running from a source tree that was never installed
        value = "0.0.0"
    globals()["__version__"] = value
    return value
