"""The agent journal on a real file: what survives a crash, and what it costs on disk."""

import pytest

from edge_agent.journal import Journal, JournalLocked


def test_unfinished_tasks_survive_a_reopen(tmp_path):
    j = Journal(tmp_path / "a.journal").open()
    j.accepted("t1", b'{"id": "t1"}')
    j.accepted("t2", b'{"id": "t2"}')
    j.finished("t1")
    j.close()
    again = Journal(tmp_path / "a.journal").open()
    assert list(again.unfinished) == ["t2"] and list(again.done) == ["t1"]
    again.close()


def test_a_torn_last_record_is_ignored(tmp_path):
    path = tmp_path / "a.journal"
    j = Journal(path).open()
    j.accepted("t1", b"payload-1")
    j.accepted("t2", b"payload-2")
    j.close()
    path.write_bytes(path.read_bytes()[:-3])     # killed in the middle of a write
    again = Journal(path).open()
    assert list(again.unfinished) == ["t1"]
    again.close()


def test_the_file_is_compacted_and_stays_bounded(tmp_path):
    path = tmp_path / "a.journal"
    j = Journal(path, keep_done=10, max_bytes=4096).open()
    for n in range(1000):
        j.accepted(f"t{n}", b"x" * 100)
        j.finished(f"t{n}")
    assert path.stat().st_size <= 4096 + 200
    assert len(j.done) == 10
    j.close()


def test_a_second_agent_with_the_same_journal_is_refused(tmp_path):
    first = Journal(tmp_path / "a.journal").open()
    with pytest.raises(JournalLocked, match="--id"):
        Journal(tmp_path / "a.journal").open()
    first.close()
