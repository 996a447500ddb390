"""Moved to :mod:`nbplugins.sandbox.servers.processes` (the front) and :mod:`nbplugins.sandbox.servers.processors`
(the pygeoapi plugins); kept so ``from tests.servers import processes`` and ``python -m tests.servers.processes ...``
go on working."""

from nbplugins.sandbox.servers.processes import *  # noqa: F403
from nbplugins.sandbox.servers.processes import _kind, _oauth_error, main  # noqa: F401 - private names
from nbplugins.sandbox.servers.processors import *  # noqa: F403
from nbplugins.sandbox.servers.processors import (  # noqa: F401 - the private names `import *` leaves out
    _Base,
    _input,
    _metadata,
    _processor_base,
    _report,
)

if __name__ == "__main__":
    main()
