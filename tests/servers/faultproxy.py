"""Moved to :mod:`nbplugins.sandbox.servers.faultproxy`; kept so ``from tests.servers import faultproxy`` goes on working."""

from nbplugins.sandbox.servers.faultproxy import *  # noqa: F403
from nbplugins.sandbox.servers.faultproxy import _drain, _pump, _read_head, _reset  # noqa: F401
