"""Secret references: names of secrets that travel where the secrets themselves must not.

A reference can sit in notebooks, pipeline files and parameter tables safely; it is resolved
only where it is used, and the value is registered with the scrubber (:mod:`nbplugins.secrets`):

``@oidc``         the current OIDC access token (from :mod:`nbplugins.tokens`)
``@env:NAME``     the value of environment variable ``NAME`` in the resolving process
``@file:PATH``    the contents of a file (for example a key file), stripped; a regular file of at most 64 KiB
"""

from __future__ import annotations

import os
import re
from typing import Any

from nbplugins import secrets, tokens
from nbplugins.errors import ValidationError
from nbplugins.files import read_secret_file

REFERENCE = re.compile(r"^@(oidc|env:[A-Za-z_][A-Za-z0-9_]*|file:.+)$")


def is_reference(value: Any) -> bool:
    """True if ``value`` is a secret reference such as ``@oidc`` or ``@env:NAME``."""
    return isinstance(value, str) and REFERENCE.match(value) is not None


def resolve_reference(what: str, reference: str) -> str:
    """The secret a reference names, registered with the scrubber; ``what`` names the user."""
    kind, _, arg = reference[1:].partition(":")
    if kind == "oidc":
        value = tokens.current()
    elif kind == "env":
        value = os.environ.get(arg, "")
        if not value:
            raise ValidationError(f"{what}: environment variable {arg} (from {reference}) is not set")
    else:
        value = (read_secret_file(arg, f"{what}: {arg}") or "").strip()
        if not value:
            raise ValidationError(f"{what}: {arg} is empty")
    secrets.register(value, what)
    return value
