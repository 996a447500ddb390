"""Elyra pipelines: build them from YAML specs, validate them, run them locally in parallel,
export them to Kubeflow Pipelines and Airflow through Elyra.

``model`` (Pipeline/Node), ``elyra`` (the .pipeline file format), ``spec`` (YAML -> pipeline),
``runner`` (parallel local runs, run record, resume), ``report`` (HTML report), ``export``.
"""

from nbplugins.pipelines.elyra import issues, load, read, validate, write
from nbplugins.pipelines.model import Node, Parameter, Pipeline
from nbplugins.pipelines.spec import build

__all__ = ["Node", "Parameter", "Pipeline", "build", "issues", "load", "read", "validate", "write"]
