"""Moved to :mod:`nbplugins.sandbox.servers.wps` (shared pieces in :mod:`nbplugins.sandbox.servers.common`);
kept so ``from tests.servers import wps`` and ``python -m tests.servers.wps ...`` go on working."""

from nbplugins.sandbox.servers.common import _read_body  # noqa: F401
from nbplugins.sandbox.servers.wps import *  # noqa: F403
from nbplugins.sandbox.servers.wps import (  # noqa: F401 - the private names `import *` leaves out
    _nd_output,
    _operation,
    _process_classes,
    _publish,
    _unauthorized,
    main,
)

if __name__ == "__main__":
    main()
