"""The one event vocabulary: every producer speaks it (staging, sweeps, pipelines), its words
compare as the strings they are, and ``line()`` says each event in one human line."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from nbplugins.events import REPLACED, Event, Kind, size_text

ROOT = Path(__file__).resolve().parents[1] / "nbplugins"


def test_kinds_are_the_strings_consumers_compare_with():
    assert Kind.FAILED == "failed" and Kind("run-started") is Kind.RUN_STARTED
    assert {str(k) for k in Kind} == {
        "run-started", "run-finished", "started", "finished", "failed", "reused", "skipped",
        "plan", "bytes", "file", "retry", "delete", "keep", "manifest", "done"}
    with pytest.raises(ValueError):
        Kind("ok")  # the sweep's status, not an event: a finished run is ``finished``


def test_an_event_is_immutable_and_stamped_with_its_time():
    event = Event(Kind.STARTED, "prepare")
    assert event.time > 0 and event.payload is None and event.message == "" and event.size == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = Kind.FAILED  # type: ignore[misc]


@pytest.mark.parametrize("event,text", [
    (Event(Kind.STARTED, "prepare"), "prepare: started"),
    (Event(Kind.FINISHED, "prepare", duration=1.25), "prepare: done in 1.2 s"),
    (Event(Kind.FINISHED, "run 3"), "run 3: done"),
    (Event(Kind.FAILED, "right", message="ValueError: no"), "right: FAILED: ValueError: no"),
    (Event(Kind.REUSED, "left", duration=2.0), "left: kept from the previous attempt in 2.0 s"),
    (Event(Kind.REUSED, "a/b.csv", message="already at the destination"), "a/b.csv: already at the destination"),
    (Event(Kind.SKIPPED, "join", message="because 'right' failed"), "join: skipped (because 'right' failed)"),
    (Event(Kind.RUN_STARTED, message="4 nodes, 2 at a time"), "run-started: 4 nodes, 2 at a time"),
    (Event(Kind.RUN_FINISHED), "run-finished"),
    (Event(Kind.PLAN, size=3 * 2**20, payload=2, message="1 already at the destination"),
     "plan: 2 files, 3.0 MiB to move (1 already at the destination)"),
    (Event(Kind.BYTES, "big.bin", size=16 * 2**20), "big.bin: 16.0 MiB moved"),
    (Event(Kind.FILE, "a.txt", size=12), "a.txt: written, 12 B"),
    (Event(Kind.FILE, "a.txt", size=2048, message=REPLACED), "a.txt: replaced, 2.0 KiB"),
    (Event(Kind.RETRY, "big.bin", message="MD5 mismatch"), "big.bin: sent again: MD5 mismatch"),
    (Event(Kind.DELETE, "old.txt"), "old.txt: deleted (not in the source)"),
    (Event(Kind.KEEP, "a.txt", message="differs from the source; no clobber"),
     "a.txt: kept (differs from the source; no clobber)"),
    (Event(Kind.MANIFEST, "_MANIFEST.json", message="s3://b/set/_MANIFEST.json"),
     "manifest: s3://b/set/_MANIFEST.json"),
    (Event(Kind.DONE, size=5 * 2**30, payload=7, message="0 already there, in 3.2 s"),
     "done: 7 files, 5.0 GiB (0 already there, in 3.2 s)"),
])
def test_line_says_each_kind_in_one_line(event, text):
    assert event.line() == text and "\n" not in text


def test_size_text_picks_the_unit_people_read():
    assert [size_text(n) for n in (0, 1023, 1024, 1536, 2**40 * 3)] == ["0 B", "1023 B", "1.0 KiB", "1.5 KiB",
                                                                          "3.0 TiB"]
    assert size_text(-2 * 2**20) == "-2.0 MiB"  # a part sent again is taken back from the total


def test_the_vocabulary_is_a_leaf_and_the_only_event_class():
    tree = ast.parse((ROOT / "events.py").read_text())
    imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.split(".")[0] == "nbplugins"]
    defined = [f"{path.relative_to(ROOT)}: {node.name}" for path in sorted(ROOT.rglob("*.py"))
               for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.ClassDef) and node.name in ("Event", "Run")]
    assert defined == ["events.py: Event"]  # one name per thing: no second Event, no ambiguous Run


def test_every_producer_yields_the_one_event(tmp_path):
    from nbplugins.pipelines import runner
    from nbplugins.storage import staging
    from nbplugins.sweep import execute

    assert "Event" not in vars(staging) or staging.Event is Event  # nothing of its own
    for module in (runner, execute):
        assert module.Event is Event
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    events = list(staging.sync(str(src), str(tmp_path / "dest")))
    assert all(type(e) is Event and isinstance(e.kind, Kind) for e in events)
    assert [e.kind for e in events] == ["plan", "bytes", "file", "manifest", "done"]
    assert events[0].payload == 1 and events[-1].payload == 1
    (src / "a.txt").write_text("changed")
    kept = staging.consume(staging.sync(str(src), str(tmp_path / "dest"), clobber=False), progress=False)
    assert kept.kept == 1 and kept.files == 0 and (tmp_path / "dest" / "a.txt").read_text() == "hello"


def test_the_staging_summary_counts_by_kind():
    from nbplugins.storage import staging

    events = [Event(Kind.PLAN, size=10, payload=2), Event(Kind.REUSED, "old.bin", size=99),
              Event(Kind.BYTES, "a", size=4), Event(Kind.BYTES, "a", size=-4), Event(Kind.BYTES, "a", size=4),
              Event(Kind.RETRY, "a", message="MD5 mismatch"), Event(Kind.FILE, "a", size=4, message=REPLACED),
              Event(Kind.BYTES, "b", size=6), Event(Kind.FILE, "b", size=6), Event(Kind.DELETE, "gone"),
              Event(Kind.MANIFEST, "_MANIFEST.json", message="s3://b/_MANIFEST.json"),
              Event(Kind.DONE, size=10, payload=2)]
    summary = staging.consume(iter(events), progress=False)
    assert (summary.files, summary.bytes, summary.skipped, summary.skipped_bytes, summary.replaced,
            summary.deleted, summary.manifest) == (2, 10, 1, 99, 1, 1, "s3://b/_MANIFEST.json")
