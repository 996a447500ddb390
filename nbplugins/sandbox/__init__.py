"""The sandbox: every service nbplugins talks to, on 127.0.0.1, in one command.

``nbplugins sandbox up`` starts them (:mod:`nbplugins.sandbox.stack`), each a small registry
entry (:mod:`nbplugins.sandbox.registry`, :mod:`nbplugins.sandbox.services`) whose server lives
in :mod:`nbplugins.sandbox.servers` and starts through :mod:`nbplugins.sandbox.harness`. The
tests and ``make demo`` use the same servers. Importing this package stays cheap:
:func:`diagnose` is meant to be called from the storage and token layers on a failed connection.
"""

from __future__ import annotations

from nbplugins.sandbox.state import SandboxError, default_dir, diagnose

__all__ = ["SandboxError", "default_dir", "diagnose"]
