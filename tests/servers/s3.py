"""Moved to :mod:`nbplugins.sandbox.servers.s3`; kept so ``from tests.servers import s3`` goes on working."""

from nbplugins.sandbox.servers.s3 import *  # noqa: F403
from nbplugins.sandbox.servers.s3 import _random  # noqa: F401
