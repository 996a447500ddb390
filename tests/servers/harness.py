"""Moved to :mod:`nbplugins.sandbox.harness` (the sandbox, the demo and the tests share it); kept
so ``from tests.servers import harness`` goes on working."""

from nbplugins.sandbox.harness import *  # noqa: F403
from nbplugins.sandbox.harness import _die_with_parent  # noqa: F401
