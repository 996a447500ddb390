"""Moved to :mod:`nbplugins.sandbox.servers.oscar` (the fixtures stay in ``tests/servers/oscar_fixtures.py``);
kept so ``from tests.servers import oscar`` and ``python -m tests.servers.oscar ...`` go on working."""

from nbplugins.sandbox.servers.oscar import *  # noqa: F403
from nbplugins.sandbox.servers.oscar import (  # noqa: F401 - the private names `import *` leaves out
    _line,
    _now,
    _passes,
    _rfc3339,
    _work,
    main,
)

if __name__ == "__main__":
    main()
