"""The one token resolver: where the OIDC access token comes from, what it says, and refresh.

Sources are tried in a fixed order unless one is named: an explicit value, the environment
(``OIDC_ACCESS_TOKEN``, ``FEDCLOUD_OIDC_ACCESS_TOKEN``), ``$NBPLUGINS_TOKEN_FILE``, the EGI
Notebooks and EOSC EU Node secret files, oidc-agent, and a refresh-token grant. Files are
re-read on every use because the hubs rewrite them; the refresh grant refreshes ahead of
expiry. Every value found is registered with :mod:`nbplugins.secrets` before it is returned.
Claims are decoded without verification, for display and diagnosis only.

The package holds one concern a module, and this file names them all, so ``tokens.X`` works
for every name below (and for the ``nbplugins.token_sources`` entry points):

* :mod:`~nbplugins.tokens.claims`: :class:`Token`, :class:`Claims`, decoding, time phrases;
* :mod:`~nbplugins.tokens.sources`: the sources and their registry;
* :mod:`~nbplugins.tokens.resolver`: :class:`TokenResolver`, :func:`current`, the 401 helper;
* :mod:`~nbplugins.tokens.issuer`: discovery, userinfo, who a token is for;
* :mod:`~nbplugins.tokens.diagnosis`: what ``token check`` shows, why a service refused.
"""

from nbplugins.tokens.claims import (
    Claims,
    Token,
    decode_claims,
    entitlements_of,
    make_token,
    relative,
    vos_from_entitlements,
    when,
)
from nbplugins.tokens.diagnosis import diagnose, summary
from nbplugins.tokens.issuer import (
    Identity,
    discovery,
    identity,
    issuer_retry,
    unreachable,
    userinfo,
)
from nbplugins.tokens.issuer import _discovered as _discovered  # the cache tests clear
from nbplugins.tokens.resolver import (
    StaticToken,
    TokenProvider,
    TokenResolver,
    current,
    default_resolver,
    with_token_retry,
)
from nbplugins.tokens.sources import (
    EGI_TOKEN_FILE,
    ENV_VARS,
    EOSC_TOKEN_FILE,
    SOURCES,
    EgiNotebooksSource,
    EnvSource,
    EoscNodeSource,
    ExplicitSource,
    FileSource,
    OidcAgentSource,
    RefreshGrantSource,
    TokenSource,
    register_entry_points,
    register_source,
    source_names,
)

__all__ = [
    "EGI_TOKEN_FILE", "ENV_VARS", "EOSC_TOKEN_FILE", "SOURCES",
    "Claims", "EgiNotebooksSource", "EnvSource", "EoscNodeSource", "ExplicitSource", "FileSource",
    "Identity", "OidcAgentSource", "RefreshGrantSource", "StaticToken", "Token", "TokenProvider",
    "TokenResolver", "TokenSource",
    "current", "decode_claims", "entitlements_of", "default_resolver", "diagnose", "discovery", "identity", "issuer_retry",
    "make_token", "register_entry_points", "register_source", "relative", "source_names", "summary",
    "unreachable", "userinfo", "vos_from_entitlements", "when", "with_token_retry",
]
