"""The one job model and wait: states, schedule, failing status URLs, deadline, Ctrl-C."""

from __future__ import annotations

import pytest

from nbplugins.errors import DeadlineExceeded, ServiceError, TransientError
from nbplugins.services import jobs
from nbplugins.services.jobs import Job, JobFailed, State


def test_every_protocol_status_word_maps_onto_one_state():
    assert jobs.state_of("ProcessSucceeded") is State.SUCCEEDED
    assert jobs.state_of("successful") is State.SUCCEEDED
    assert jobs.state_of("Succeeded") is State.SUCCEEDED
    assert jobs.state_of("ProcessStarted") is State.RUNNING
    assert jobs.state_of("Pending") is State.ACCEPTED
    assert jobs.state_of("dismissed").final


def test_an_unknown_status_word_is_named():
    with pytest.raises(ServiceError, match="unknown job status 'Exploded'"):
        jobs.state_of("Exploded", service="ccp")


def test_a_failed_job_raises_with_the_services_own_message():
    job = Job("7", "dataminer", "CSV_SUMMARY", State.FAILED, message="column 'x' not found")
    with pytest.raises(JobFailed, match="column 'x' not found"):
        job.check()
    assert Job("8", "s", "p", State.SUCCEEDED).check().id == "8"


def test_the_schedule_is_one_second_or_a_tenth_of_the_elapsed_time():
    assert jobs.schedule(0) == 1.0
    assert jobs.schedule(5) == 1.0
    assert jobs.schedule(120) == 12.0


def test_wait_follows_the_job_until_it_is_final():
    seen = []

    def refresh(job: Job) -> Job:
        seen.append(job.state)
        return job.with_(state=State.SUCCEEDED if len(seen) == 2 else State.RUNNING, progress=50)

    final = jobs.wait(Job("1", "svc", "proc"), refresh, progress=False)
    assert final.state is State.SUCCEEDED and len(seen) == 2


def test_a_failing_status_url_is_asked_at_most_once_a_second():
    calls = []

    def refresh(job: Job) -> Job:
        calls.append(1)
        raise TransientError("status answered HTTP 500", 500)

    with pytest.raises(DeadlineExceeded):
        jobs.wait(Job("1", "svc", "proc"), refresh, timeout=3.0, progress=False)
    # three seconds of a failing status URL: the first request and at most one more a second
    assert 1 <= len(calls) <= 4


def test_ctrl_c_dismisses_the_job_and_goes_on_up():
    dismissed = []

    def refresh(job: Job) -> Job:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        jobs.wait(Job("9", "svc", "proc"), refresh, dismiss=dismissed.append, progress=False)
    assert [j.id for j in dismissed] == ["9"]


def test_a_failed_dismissal_does_not_hide_the_interrupt():
    def refresh(job: Job) -> Job:
        raise KeyboardInterrupt

    def dismiss(job: Job) -> None:
        raise ServiceError("gone")

    with pytest.raises(KeyboardInterrupt):
        jobs.wait(Job("9", "svc", "proc"), refresh, dismiss=dismiss, progress=False)
