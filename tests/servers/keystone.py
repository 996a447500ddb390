"""Moved to :mod:`nbplugins.sandbox.servers.keystone`; kept so ``from tests.servers import keystone``
and ``python -m tests.servers.keystone ...`` go on working."""

from nbplugins.sandbox.servers.keystone import *  # noqa: F403
from nbplugins.sandbox.servers.keystone import (  # noqa: F401 - the private names `import *` leaves out
    _federated_claims,
    _iso,
    _microversion,
    _server_id,
    main,
)

if __name__ == "__main__":
    main()
