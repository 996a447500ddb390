"""nbplugins inside the Elyra editor: the local runtime processor, its on/off switch, palette metadata
and the Kubeflow Pipelines component catalog.

Named ``editor`` (not ``elyra``) so that ``import elyra`` inside it still means the Elyra package.
Importing this package imports nothing from Elyra; :mod:`.processor` and :mod:`.catalog` do.
"""
