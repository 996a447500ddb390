"""Where a token can come from, one class a place, and the registry that names them.

An explicit value, the environment (``OIDC_ACCESS_TOKEN``, ``FEDCLOUD_OIDC_ACCESS_TOKEN``), a
token file (``$NBPLUGINS_TOKEN_FILE``), the EGI Notebooks and EOSC EU Node secret files,
oidc-agent, and a refresh-token grant. Files are re-read on every use because the hubs
rewrite them; the refresh grant refreshes ahead of expiry. Other packages add sources through
the ``nbplugins.token_sources`` entry-point group.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from nbplugins import secrets
from nbplugins.config import TokenConfig
from nbplugins.errors import TokenError
from nbplugins.files import read_secret_file
from nbplugins.retry import Retry, describe
from nbplugins.tokens.claims import Token, make_token, relative
from nbplugins.tokens.issuer import discovery, issuer_retry, unreachable

log = logging.getLogger(__name__)

EGI_TOKEN_FILE = "/var/run/secrets/egi.eu/access_token"
EOSC_TOKEN_FILE = "/var/run/secrets/oidc/access_token"
ENV_VARS = ("OIDC_ACCESS_TOKEN", "FEDCLOUD_OIDC_ACCESS_TOKEN")


class TokenSource:
    """One place a token can come from. ``fetch`` returns None when the source is absent."""

    name: ClassVar[str] = "source"
    refreshable: ClassVar[bool] = False

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        """The instances of this source that ``cfg`` and the environment make available."""
        return [cls()]

    def describe(self) -> str:
        """Where the token comes from, for messages (``token file /path``); never the value."""
        return self.name

    def fetch(self, force_refresh: bool = False) -> Token | None:
        """The token this source holds now (a fresh one if ``force_refresh`` and it can), or None."""
        raise NotImplementedError

    def _token(self, text: str | None, empty: str) -> Token | None:
        """The token in ``text`` read here: None when the source is absent, TokenError (``empty``) when blank."""
        if text is None:
            return None
        if not text.strip():
            raise TokenError(f"{self.describe()}: {empty}")
        return make_token(text, self.describe())


class ExplicitSource(TokenSource):
    """A value given on the command line or in code; never found by the search."""

    name = "explicit"

    def __init__(self, value: str) -> None:
        self.value = value

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return []

    def describe(self) -> str:
        return "explicit value"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        return self._token(self.value, "the token is empty")


class EnvSource(TokenSource):
    """An environment variable (``OIDC_ACCESS_TOKEN``, then ``FEDCLOUD_OIDC_ACCESS_TOKEN``)."""

    name = "env"

    def __init__(self, var: str = ENV_VARS[0]) -> None:
        self.var = var

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(var) for var in ENV_VARS]

    def describe(self) -> str:
        return f"environment variable {self.var}"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        return self._token(os.environ.get(self.var), "is set but empty")


class FileSource(TokenSource):
    """A token file, re-read on every fetch (hubs rewrite it in place)."""

    name = "file"
    required = True

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cfg.file)] if cfg.file else []

    def describe(self) -> str:
        return f"token file {self.path}"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        if self.path is None:
            return None
        # a regular file of a few KiB only: a FIFO, /dev/zero or a huge file is refused at once
        text = read_secret_file(self.path, self.describe(), TokenError, missing_ok=not self.required)
        return self._token(text, "is empty")


class EgiNotebooksSource(FileSource):
    """The file EGI Notebooks keeps fresh (an ``id_token`` sits beside it)."""

    name = "egi"
    required = False
    default_path: ClassVar[str] = EGI_TOKEN_FILE

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cls.default_path)]

    def describe(self) -> str:
        return f"EGI Notebooks token file {self.path}"


class EoscNodeSource(EgiNotebooksSource):
    """The file the EOSC EU Node keeps fresh."""

    name = "eosc"
    default_path: ClassVar[str] = EOSC_TOKEN_FILE

    def describe(self) -> str:
        return f"EOSC EU Node token file {self.path}"


class OidcAgentSource(TokenSource):
    """oidc-agent, through liboidcagent or the ``oidc-token`` command.

    The agent keeps and refreshes the token: asked for one valid ``min_valid`` more seconds
    (an hour more when a refresh is forced), it refreshes when the one it holds is shorter.
    Its expiry comes with the answer, so an opaque token expires too. A missing, dead or
    restarted agent is one :class:`TokenError` line saying what to do.
    """

    name = "oidc-agent"
    refreshable = True

    def __init__(self, account: str, min_valid: float = 60.0) -> None:
        self.account = account
        self.min_valid = min_valid

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cfg.oidc_agent_account, cfg.refresh_margin)] if cfg.oidc_agent_account else []

    def describe(self) -> str:
        return f"oidc-agent account {self.account!r}"

    def fetch(self, force_refresh: bool = False) -> Token | None:
        # the agent refreshes when its token is valid for less than min_valid_period seconds:
        # an hour more than the margin makes it refresh now
        min_valid = int(self.min_valid) + (3600 if force_refresh else 0)
        hint = f"start oidc-agent, set OIDC_SOCK to its socket and load the account with: oidc-add {self.account}"
        try:
            import liboidcagent
        except ImportError:
            liboidcagent = None
        expires_at: float | None = None
        if liboidcagent is not None:
            try:
                value, _, exp = liboidcagent.get_token_response(self.account, min_valid_period=min_valid,
                                                                application_hint="nbplugins")
            except liboidcagent.OidcAgentCryptError as exc:  # an answer cut short: the agent died mid-request
                raise TokenError(f"{self.describe()}: the agent stopped answering ({_one_line(exc)}); {hint}") from None
            except liboidcagent.OidcAgentError as exc:
                raise TokenError(f"{self.describe()}: {_one_line(exc)} ({hint})") from None
            except Exception as exc:  # liboidcagent lets a cut or garbled answer through unwrapped
                raise TokenError(f"{self.describe()}: the agent stopped answering ({describe(exc)}); {hint}") from None
            expires_at = float(exp) if isinstance(exp, (int, float)) and exp > 0 else None
        else:
            exe = shutil.which("oidc-token")
            if exe is None:
                raise TokenError(f"{self.describe()}: neither liboidcagent nor oidc-token is installed")
            try:
                proc = subprocess.run([exe, f"--time={min_valid}", self.account], capture_output=True,
                                      text=True, timeout=30, env={**os.environ, "LANG": "C"},
                                      stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise TokenError(f"{self.describe()}: oidc-token did not answer within 30 s ({hint})") from None
            if proc.returncode != 0:
                raise TokenError(f"{self.describe()}: oidc-token failed: {_one_line(proc.stderr)[:200]} ({hint})")
            value = proc.stdout
        if not value or not value.strip():
            raise TokenError(f"{self.describe()}: the agent returned no token")
        return make_token(value, self.describe(), expires_at=expires_at)


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "no message"


class RefreshGrantSource(TokenSource):
    """A refresh-token grant against the issuer's token endpoint, refreshed ahead of expiry.

    Access tokens are cached per (endpoint, client, refresh token) for the process and
    replaced ``refresh_margin`` seconds before they expire; a rotated refresh token replaces
    the old one in memory.
    """

    name = "refresh"
    refreshable = True
    _cache: ClassVar[dict[tuple[str, str, str], dict[str, Any]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, cfg: TokenConfig) -> None:
        self.cfg = cfg

    @classmethod
    def from_config(cls, cfg: TokenConfig) -> list[TokenSource]:
        return [cls(cfg)] if cfg.refresh_token and cfg.client_id else []

    def describe(self) -> str:
        return f"refresh grant at {self.cfg.token_endpoint or self.cfg.issuer}"

    def _retry(self) -> Retry:
        return issuer_retry(self.cfg.timeout)

    def token_endpoint(self) -> str:
        """The configured token endpoint, or the one the issuer's discovery document names."""
        if self.cfg.token_endpoint:
            return self.cfg.token_endpoint
        try:
            endpoint = discovery(self.cfg.issuer, timeout=self.cfg.timeout).get("token_endpoint")
        except TokenError as exc:
            raise TokenError(f"{self.describe()}: {exc}") from None
        if not isinstance(endpoint, str) or not endpoint:
            raise TokenError(f"{self.describe()}: the issuer's discovery document is not OpenID Connect metadata")
        return endpoint

    def fetch(self, force_refresh: bool = False) -> Token | None:
        endpoint = self.token_endpoint()
        key = (endpoint, self.cfg.client_id or "", self.cfg.refresh_token or "")
        with self._lock:
            entry = self._cache.get(key)
            if entry and not force_refresh and entry["expires_at"] - self.cfg.refresh_margin > time.time():
                return entry["token"]
            refresh_token = entry["refresh_token"] if entry else self.cfg.refresh_token
            response = self._grant(endpoint, refresh_token)
            value = response.get("access_token")
            if not isinstance(value, str) or not value:
                raise TokenError(f"{self.describe()}: the issuer answered without an access_token")
            new_refresh = response.get("refresh_token") or refresh_token
            secrets.register(new_refresh, "refresh token")
            expires_in = response.get("expires_in")
            fallback = time.time() + float(expires_in) if isinstance(expires_in, (int, float)) else None
            token = make_token(value, self.describe(), expires_at=fallback)
            # authlib and we both need an expiry, or nothing refreshes: JWT exp first, else expires_in
            expires_at = token.expires_at if token.expires_at is not None else time.time() + 3600
            self._cache[key] = {"token": token, "refresh_token": new_refresh, "expires_at": expires_at}
            log.info("refreshed access token from %s (valid %s)", self.describe(), relative(expires_at - time.time()))
            return token

    def _grant(self, endpoint: str, refresh_token: str | None) -> dict[str, Any]:
        from authlib.integrations.base_client.errors import OAuthError
        from authlib.integrations.requests_client import OAuth2Session

        # no scope: a refresh grant keeps the scopes of the original grant (RFC 6749 §6)
        session = OAuth2Session(self.cfg.client_id, self.cfg.client_secret)

        def call() -> dict[str, Any]:
            return dict(session.refresh_token(endpoint, refresh_token=refresh_token, timeout=self.cfg.timeout))

        def refused(exc: Exception) -> TokenError | None:
            if isinstance(exc, OAuthError):
                reason = f"{exc.error}: {exc.description}" if exc.description else str(exc.error)
                hint = " (the refresh token was revoked or has expired: get a new one)" if exc.error == "invalid_grant" else ""
                return TokenError(f"{self.describe()}: the issuer refused the grant ({reason}){hint}")
            if isinstance(exc, ValueError):
                return TokenError(f"{self.describe()}: the issuer answered something that is not a token response")
            return unreachable(self.describe())(exc)

        try:
            return self._retry().call(call, what=f"refresh grant at {endpoint}", map_error=refused)
        finally:
            session.close()


# ----------------------------------------------------------------------------- registry

SOURCES: dict[str, type[TokenSource]] = {}


def register_source(cls: type[TokenSource]) -> type[TokenSource]:
    """Add a token source class under ``cls.name`` (also how entry points plug in)."""
    SOURCES[cls.name] = cls
    return cls


for _cls in (EnvSource, FileSource, EgiNotebooksSource, EoscNodeSource, OidcAgentSource, RefreshGrantSource):
    register_source(_cls)


def register_entry_points() -> None:
    """Load token sources other packages register in the ``nbplugins.token_sources`` group."""
    for ep in entry_points(group="nbplugins.token_sources"):
        if ep.name not in SOURCES:
            register_source(ep.load())


def source_names() -> list[str]:
    """The names of the registered token sources, in the order they are tried."""
    return list(SOURCES)
