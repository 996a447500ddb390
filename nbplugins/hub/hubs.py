"""Known JupyterHubs by name, plus the ones a user names in ``[hubs]``, plus any hub URL.

EGI Notebooks and the EOSC EU Node have stable public addresses (the EOSC one from the
node's integration page, which calls its hub API at ``.../services/jwt``); ``[hubs] eosc`` or
``NBPLUGINS_EOSC_HUB_URL`` points ``eosc`` elsewhere (another region of the node).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from nbplugins.errors import ValidationError


@dataclass(frozen=True)
class Hub:
    """A JupyterHub users reach in a browser: its name, base URL (ends with ``/``) and title."""

    name: str
    url: str | None
    title: str
    hint: str = ""


_registry: dict[str, Hub] = {}


def register(name: str, url: str | None, title: str, hint: str = "") -> None:
    """Add or replace a named hub."""
    _registry[name.lower()] = Hub(name.lower(), normalize_url(url) if url else None, title, hint)


def names() -> list[str]:
    """Names of the built-in hubs, for help texts."""
    return sorted(_registry)


def normalize_url(url: str) -> str:
    """Check a hub URL (http(s), a host, no query) and return it ending with one ``/``."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError(f"hub {url!r}: not a known hub name nor an http(s) URL "
                              f"(known: {', '.join(names())})")
    if parts.username or parts.password:
        raise ValidationError("hub URL must not contain a user name or password")
    if parts.query or parts.fragment:
        raise ValidationError(f"hub URL {url!r} must not have a query or fragment")
    path = parts.path.rstrip("/")
    for tail in ("/hub/home", "/hub/login", "/hub/spawn", "/hub"):  # pasted from the address bar
        if path.endswith(tail):
            path = path[: -len(tail)]
            break
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path + "/", "", ""))


register("egi", "https://notebooks.egi.eu", "EGI Notebooks")
register("eosc", "https://eu-1.notebooks.open-science-cloud-user-apps.eu", "EOSC EU Node Interactive Notebooks")


def resolve(name_or_url: str | None, cfg: object | None = None) -> Hub:
    """The hub for a name (built-in or from ``[hubs]``) or a URL; a clear error otherwise."""
    from nbplugins import config

    section = (cfg or config.get()).hubs  # type: ignore[attr-defined]
    wanted = name_or_url or section.default
    if not wanted:
        raise ValidationError(
            f"no hub given: pass --hub URL or a name ({', '.join(names())}), "
            "or set [hubs] default in the config file"
        )
    key = wanted.strip().lower()
    if "://" in key:
        return Hub(wanted, normalize_url(wanted), wanted)
    if key in section.urls:
        return Hub(key, normalize_url(section.urls[key]), key)
    if key == "eosc" and section.eosc:
        return Hub("eosc", normalize_url(section.eosc), _registry["eosc"].title)
    hub = _registry.get(key)
    if hub is None:
        known = sorted(set(names()) | set(section.urls))
        raise ValidationError(f"hub {wanted!r}: not a known hub name nor an http(s) URL "
                              f"(known: {', '.join(known)})")
    if hub.url is None:
        raise ValidationError(f"hub {hub.name!r} ({hub.title}) has no built-in address: {hub.hint}")
    return hub
