"""The Kubeflow Pipelines palette of nbplugins: a component catalog connector and its schema.

Follows the pattern of Elyra's example catalogs (elyra-examples-kfp-catalog): the connector
(entry point ``nbplugins-kfp-catalog`` in ``elyra.component.catalog_types``, the name Elyra
matches against the catalog instance's ``schema_name``) lists the component YAML files shipped in
``components/``; the schema comes from ``metadata.schemas_providers``; a factory catalog
instance (``share/jupyter/metadata/component-catalogs/nbplugins-kfp.json``) puts them in the
palette without any setup. The components run ``nbplugins`` commands; their credentials come
from a Kubernetes secret (see ``kubernetes/nbplugins-credentials.yaml``), never from inputs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from elyra.metadata.schema import SchemasProvider
from elyra.pipeline.catalog_connector import ComponentCatalogConnector, EntryData, KfpEntryData

HERE = Path(__file__).resolve().parent
COMPONENTS = HERE / "components"
SCHEMA = HERE / "catalog-schema.json"
SCHEMA_NAME = "nbplugins-kfp-catalog"


def component_files() -> list[Path]:
    """The component definitions this catalog offers, by file name."""
    return sorted(COMPONENTS.glob("*.yaml"))


class NbpluginsCatalogConnector(ComponentCatalogConnector):
    """Offers the nbplugins steps (stage-in, publish, DataMiner/CCP process, OSCAR run) to Kubeflow Pipelines."""

    def get_catalog_entries(self, catalog_metadata: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"component-id": path.name} for path in component_files()]

    def get_entry_data(self, catalog_entry_data: dict[str, Any], catalog_metadata: dict[str, Any]
                       ) -> EntryData | None:
        name = catalog_entry_data.get("component-id")
        known = {path.name: path for path in component_files()}
        if name not in known:  # only the files listed above, never a path
            self.log.error(f"nbplugins catalog: no component {name!r} (known: {', '.join(known)})")
            return None
        return KfpEntryData(definition=known[name].read_text(), file_extension=".yaml")

    @classmethod
    def get_hash_keys(cls) -> list[Any]:
        return ["component-id"]


class NbpluginsSchemasProvider(SchemasProvider):
    """The schema of the nbplugins catalog (schemaspace ``component-catalogs``)."""

    def get_schemas(self) -> list[dict[str, Any]]:
        try:
            return [json.loads(SCHEMA.read_text())]
        except (OSError, ValueError) as exc:
            logging.getLogger("ElyraApp").error(f"nbplugins catalog schema {SCHEMA}: {exc}")
            return []
