"""Papermill plugins: the nbplugins engine and the s3:// / onedata:// I/O handlers.

papermill loads every ``papermill.engine`` entry point while it is imported; importing it
here first means that loading our engine from inside that registration finds papermill's
classes defined, whichever module a caller imports first.
"""

import papermill  # noqa: F401
