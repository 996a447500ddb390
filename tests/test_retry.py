"""The shared retry-and-poll mechanism: backoff, budget, deadline, predicate, cancellation."""

from __future__ import annotations

import errno
import ssl
import threading
import time

import pytest

from nbplugins import config
from nbplugins.errors import Cancelled, DeadlineExceeded, StorageError, TransientError
from nbplugins.retry import Retry, foreign_as, is_tls_error, is_transient, poll

FAST = Retry(initial=0.001, cap=0.01, jitter=0)


class Flaky:
    def __init__(self, failures: list[BaseException], result="ok"):
        self.failures = list(failures)
        self.calls = 0
        self.result = result

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.result


class FakeHTTPError(Exception):
    def __init__(self, status):
        super().__init__(f"HTTP {status}")
        self.response = type("R", (), {"status_code": status})()


def test_transient_errors_are_retried_until_success():
    fn = Flaky([ConnectionResetError(), TimeoutError(), TransientError("503", 503), FakeHTTPError(429)])
    assert FAST.call(fn) == "ok" and fn.calls == 5


@pytest.mark.parametrize("exc,expected", [
    (FakeHTTPError(500), True), (FakeHTTPError(503), True), (FakeHTTPError(429), True),
    (FakeHTTPError(404), False), (FakeHTTPError(403), False), (ValueError("x"), False),
    (OSError(errno.ECONNREFUSED, "refused"), True), (OSError(errno.ENOSPC, "full"), False),
])
def test_retryable_predicate(exc, expected):
    assert is_transient(exc) is expected


def test_permanent_error_is_raised_at_once():
    fn = Flaky([FakeHTTPError(404)])
    with pytest.raises(FakeHTTPError):
        FAST.call(fn)
    assert fn.calls == 1


def test_error_budget_stops_consecutive_failures():
    fn = Flaky([ConnectionResetError()] * 10)
    with pytest.raises(DeadlineExceeded, match="after 3 consecutive errors"):
        FAST.with_(error_budget=3).call(fn, what="upload x")
    assert fn.calls == 3


def test_deadline_bounds_total_time():
    fn = Flaky([ConnectionResetError()] * 100)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="deadline"):
        Retry(initial=0.05, cap=0.05, jitter=0, deadline=0.3, error_budget=1000).call(fn)
    assert time.monotonic() - start < 1.0


def test_backoff_grows_and_is_capped():
    delays = Retry(initial=1, factor=2, cap=5, jitter=0).delays()
    assert [next(delays) for _ in range(5)] == [1, 2, 4, 5, 5]
    jittered = Retry(initial=10, cap=100, jitter=0.5).delays()
    assert all(5 <= next(jittered) <= 15 for _ in range(1))


def test_retry_after_header_is_honoured_up_to_the_cap():
    fn = Flaky([TransientError("slow down", 429, retry_after=0.2)])
    start = time.monotonic()
    Retry(initial=0.001, cap=0.3, jitter=0).call(fn)
    assert time.monotonic() - start >= 0.2


def test_cancel_event_interrupts_a_wait():
    cancel = threading.Event()
    fn = Flaky([ConnectionResetError()] * 5)
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(Cancelled):
        Retry(initial=5, cap=5, jitter=0, cancel=cancel).call(fn)


def test_poll_waits_until_done_and_survives_flaky_status():
    states = iter(["accepted", "running", "running", "succeeded"])
    fetch = Flaky([ConnectionResetError()], result=None)
    fetch_states = lambda: fetch() or next(states)  # noqa: E731
    seen = []
    result = poll(fetch_states, lambda s: s == "succeeded", interval=0.001, max_interval=0.005,
                  retry=FAST, on_status=seen.append)
    assert result == "succeeded" and seen == ["accepted", "running", "running", "succeeded"]


def test_poll_deadline():
    with pytest.raises(DeadlineExceeded, match="not finished after"):
        poll(lambda: "running", lambda s: False, what="job 7", interval=0.05, deadline=0.2, retry=FAST)


def test_map_error_turns_the_final_failure_into_a_domain_error():
    fn = Flaky([ConnectionResetError()] * 10)
    with pytest.raises(StorageError, match="^save x: gave up after 2") as info:
        FAST.with_(error_budget=2).call(fn, what="x", map_error=lambda exc: StorageError(f"save {exc}"))
    assert info.value.__cause__ is None and info.value.__suppress_context__
    kept = FakeHTTPError(404)
    with pytest.raises(FakeHTTPError) as info:
        FAST.call(Flaky([kept]), map_error=lambda exc: None)  # None: the error goes up as it is
    assert info.value is kept
    assert FAST.call(Flaky([ConnectionResetError()]), map_error=lambda exc: StorageError("never")) == "ok"


def test_foreign_as_keeps_our_errors_and_converts_the_rest():
    mapper = foreign_as(lambda exc: StorageError(f"cannot save: {type(exc).__name__}"))
    ours = DeadlineExceeded("upload: gave up")
    assert mapper(ours) is None
    assert str(mapper(ValueError("x"))) == "cannot save: ValueError"
    with pytest.raises(DeadlineExceeded):
        FAST.with_(error_budget=1).call(Flaky([TimeoutError()]), map_error=mapper)
    with pytest.raises(StorageError, match="cannot save: FakeHTTPError"):
        FAST.call(Flaky([FakeHTTPError(403)]), map_error=mapper)


class SSLError(OSError):  # named like requests' and ssl's: matched by name, as botocore's is
    pass


def test_tls_errors_are_found_in_the_chain_and_never_retried():
    assert is_tls_error(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    assert is_tls_error(SSLError("handshake"))
    try:
        try:
            raise ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
        except ssl.SSLError as inner:
            raise ConnectionError("Max retries exceeded") from inner
    except ConnectionError as exc:
        wrapped = exc
    assert is_tls_error(wrapped)
    assert is_tls_error(ConnectionError("HTTPSConnectionPool: [SSL: CERTIFICATE_VERIFY_FAILED] self-signed"))
    assert not is_tls_error(ConnectionResetError()) and not is_tls_error(FakeHTTPError(503))
    assert not is_transient(SSLError("handshake"))


def test_the_configured_default_policy_comes_from_the_retry_section(monkeypatch):
    monkeypatch.setenv("NBPLUGINS_RETRY_DEADLINE", "7")
    assert config.retry_policy().deadline == 7.0
    assert Retry.from_config(cap=1.0) == Retry(deadline=7.0, cap=1.0)
    assert config.retry_policy(error_budget=2).error_budget == 2
