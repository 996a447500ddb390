"""Values a notebook records for summaries, in scrapbook's format (readable by scrapbook).

``nbplugins.scraps.glue("rmse", 0.12)`` in a notebook is what ``scrapbook.glue`` does for JSON
values, without importing pandas into every kernel; sweeps and pipelines read the values
back with :func:`read`.
"""

from __future__ import annotations

from typing import Any

MIME = "application/scrapbook.scrap.json+json"


def glue(name: str, value: Any) -> None:
    """Record a JSON-serializable ``value`` under ``name`` in the running notebook's output."""
    from IPython.display import display

    display({MIME: {"name": name, "data": value, "encoder": "json", "version": 1}},
            metadata={"scrapbook": {"name": name, "data": True, "display": False}}, raw=True)


def read(nb: Any) -> dict[str, Any]:
    """Every value a notebook glued (with scrapbook or :func:`glue`), by name."""
    values = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            for mime, data in output.get("data", {}).items():
                if mime.startswith("application/scrapbook.scrap.") and isinstance(data, dict) and "name" in data:
                    values[data["name"]] = data.get("data")
    return values
