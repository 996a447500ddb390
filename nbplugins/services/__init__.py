"""Remote compute from a notebook, the CLI and a pipeline node: D4Science DataMiner (OGC WPS),
OGC API - Processes (D4Science CCP, pygeoapi, ADES) and OSCAR.

One job model and one wait (:mod:`.jobs`, on :func:`nbplugins.retry.poll`), one result
downloader (:mod:`.results`, through the storage layer), one module per protocol.
"""
