"""Fixtures for the service steps: a DataMiner-like WPS server and a CCP-like OGC API - Processes
server, each a real server in a subprocess on 127.0.0.1, started once per session.

``wps_server`` (:class:`tests.servers.wps.WpsServer`, PyWPS 4.x):
    ``.url``    the WPS endpoint, ``http://127.0.0.1:PORT/wps/WebProcessingService``
    ``.token``  the accepted token (legacy gcube shape), as ``gcube-token: T`` or ``Authorization: Bearer T``
    ``.set_tokens(*tokens)``  accept exactly these from now on (restore with ``set_tokens(wps_server.token)``)
    processes: ``wps.CSV_SUMMARY`` (InputTable text/csv by reference, Column, Operation mean|max|min,
    Rounding integer), ``wps.FAILING`` (Reason), ``wps.SLEEP`` (Seconds float); results as DataMiner's
    ``non_deterministic_output``; file links under ``/files/`` are public, one names ``localhost``.
    Status documents are at ``/wps/outputs/<uuid>.xml`` (token required).

``processes_server`` (:class:`tests.servers.processes.ProcessesServer`, pygeoapi 0.21, TinyDB jobs):
    ``.url``            the API root (``/processes``, ``/jobs``; send ``Accept: application/json``:
                        pygeoapi answers HTML to ``*/*`` on some routes)
    ``.token_endpoint`` ``.url + "/uma/token"`` (Keycloak's UMA grant)
    ``.context``        the VRE context the UMA ``audience`` must name (plain or URL-encoded)
    ``.user_token``     a user access token (JWT, 1 day) the UMA endpoint accepts; any HS256 JWT signed
                        with the ``make_jwt`` fixture's key is accepted too while not expired
    ``.api_token``      a static Bearer token the API accepts (a plain OGC server without UMA)
    ``.uma_lifetime(seconds)``  lifetime of the UMA tokens issued from now on (default 300 s)
    processes: ``multi-files`` (count, prefix, seconds), ``failing`` (reason), ``sleep`` (seconds).

Both (:class:`tests.servers.wps.ServiceHandle`):
    ``.count(kind) -> int``   requests of a kind since the last reset. Kinds: ``status`` (a WPS status
        document / ``GET /jobs/{id}``), ``execute``, ``results`` (a stored WPS output / ``GET
        /jobs/{id}/results``), ``dismiss`` (``DELETE /jobs/{id}``; never for WPS), ``file`` (a
        ``/files/`` link), ``unauthorized`` (answered 401), ``uma``, ``capabilities``, ``describe``,
        ``list``, ``all``. Faulted requests count too.
    ``.counts() -> dict``     every kind at once
    ``.reset_counts()``       zero the counts and forget the headers seen
    ``.status_fault(mode, seconds)``  status requests only, for ``seconds``: ``"500"`` answers 500,
        ``"refuse"`` closes the connection without an answer, ``"401"`` answers 401;
        ``.clear_fault()`` ends it early
    ``.expire_uma()``         every UMA token issued so far gets 401 (processes server only)
    ``.headers_seen(path_or_kind) -> list[dict]``  the headers (names lower-cased) of the requests
        whose kind is this or whose path contains it, oldest first
The fixtures reset counts, headers, faults and tokens before each test that uses them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import processes as processes_servers
from tests.servers import wps as wps_servers


@pytest.fixture(scope="session")
def _wps_session(tmp_path_factory) -> Iterator[wps_servers.WpsServer]:
    server = wps_servers.start(tmp_path_factory.mktemp("wps-data"), log_dir=tmp_path_factory.mktemp("wps-log"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _processes_session(tmp_path_factory) -> Iterator[processes_servers.ProcessesServer]:
    server = processes_servers.start(tmp_path_factory.mktemp("processes-data"),
                                     log_dir=tmp_path_factory.mktemp("processes-log"))
    yield server
    server.stop()


@pytest.fixture
def wps_server(_wps_session) -> wps_servers.WpsServer:
    """The DataMiner-like PyWPS server (one per session), counts and faults reset."""
    _wps_session.clear_fault()
    _wps_session.set_tokens(_wps_session.token)
    _wps_session.reset_counts()
    return _wps_session


@pytest.fixture
def processes_server(_processes_session) -> processes_servers.ProcessesServer:
    """The CCP-like pygeoapi server with its UMA endpoint (one per session), counts and faults reset."""
    _processes_session.clear_fault()
    _processes_session.uma_lifetime(300)
    _processes_session.reset_counts()
    return _processes_session
