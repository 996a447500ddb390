"""Moved to :mod:`nbplugins.sandbox.servers.onedata`; kept so ``from tests.servers.onedata import ...``
and ``python -m tests.servers.onedata ...`` go on working."""

from nbplugins.sandbox.servers.onedata import *  # noqa: F403
from nbplugins.sandbox.servers.onedata import main

if __name__ == "__main__":
    main()
