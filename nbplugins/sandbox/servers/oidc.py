"""A real OpenID Connect provider on loopback (PyPI ``oidc-provider-mock``) and a helper that
walks its authorization-code flow to obtain a refresh token, as a user's browser would."""

from __future__ import annotations

import json
import urllib.parse

import requests

from nbplugins.sandbox import harness

REDIRECT_URI = "http://127.0.0.1/callback"


def start_provider(token_max_age: int = 300, users: list[dict] | None = None, **kwargs) -> harness.ServerProcess:
    """Start ``oidc-provider-mock`` with the given users (claims include ``sub``)."""
    argv = [harness.venv_bin("oidc-provider-mock"), "--host", harness.HOST, "--port", "{port}",
            "--token-max-age", str(token_max_age)]
    for user in users or [{"sub": "alice@egi.eu",
                           "eduperson_entitlement": ["urn:mace:egi.eu:group:vo.nbplugins.eu:role=member#aai.egi.eu"]}]:
        argv += ["--user-claims", json.dumps(user)]
    url = f"http://{harness.HOST}:{{port}}"
    return harness.start("oidc", argv, url=url, ready=None, **kwargs)


def login(issuer: str, sub: str, client_id: str = "nbplugins", client_secret: str = "client-secret-value") -> dict:
    """Authorize ``sub`` and exchange the code: returns the token response (with refresh_token)."""
    response = requests.post(
        f"{issuer}/oauth2/authorize",
        params={"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
                "scope": "openid offline_access"},
        data={"sub": sub}, allow_redirects=False, timeout=10,
    )
    response.raise_for_status()
    code = urllib.parse.parse_qs(urllib.parse.urlparse(response.headers["location"]).query)["code"][0]
    token = requests.post(
        f"{issuer}/oauth2/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI},
        auth=(client_id, client_secret), timeout=10,
    )
    token.raise_for_status()
    return token.json()


def revoke(issuer: str, sub: str) -> None:
    """Revoke every access and refresh token of ``sub`` at the provider."""
    requests.post(f"{issuer}/users/{urllib.parse.quote(sub)}/revoke-tokens", timeout=10).raise_for_status()


def register_client(issuer: str, scope: str = "openid offline_access") -> tuple[str, str]:
    """Register a client by dynamic registration, allowed ``scope``; returns (client_id, client_secret).

    The provider's default clients are not allowed ``offline_access``, which oidc-agent always
    asks for in its refresh grants.
    """
    response = requests.post(f"{issuer}/oauth2/clients", json={"redirect_uris": [REDIRECT_URI], "scope": scope},
                             timeout=10)
    response.raise_for_status()
    client = response.json()
    return client["client_id"], client["client_secret"]
