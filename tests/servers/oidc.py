"""Moved to :mod:`nbplugins.sandbox.servers.oidc`; kept so ``from tests.servers import oidc`` goes on working."""

from nbplugins.sandbox.servers.oidc import *  # noqa: F403
