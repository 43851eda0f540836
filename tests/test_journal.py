"""The agent journal on a real file: what survives a crash, and what it costs on disk."""

import pytest

from fogmesh.edge_agent.journal import Journal, JournalLocked


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


def test_answered_ids_are_forgotten_after_the_dedup_window_even_across_restarts(tmp_path):
    clock = [1000.0]
    path = tmp_path / "a.journal"
    j = Journal(path, done_ttl_s=900.0, wall_clock=lambda: clock[0]).open()
    for key in ("old", "new"):
        j.accepted(key, b"x")
        j.finished(key)
        clock[0] += 600.0
    j.close()
    again = Journal(path, done_ttl_s=900.0, wall_clock=lambda: clock[0]).open()   # 1200 s and 600 s later
    assert list(again.done) == ["new"]
    again.close()


def test_done_records_written_without_a_time_are_still_read(tmp_path):
    import struct
    path = tmp_path / "a.journal"
    path.write_bytes(b"D" + struct.pack(">I", 2) + b"t1")     # an older format: no answer kept
    j = Journal(path).open()
    assert list(j.done) == ["t1"]
    j.close()


def test_answers_survive_a_reopen_so_a_resubmission_gets_the_same_one(tmp_path):
    from fogmesh.edge_agent.answer_book import StoredAnswer
    j = Journal(tmp_path / "a.journal").open()
    j.accepted("t1", b'{"id": "t1"}')
    j.finished("t1", StoredAnswer("replies/d", b'{"id":"t1","status":"ok"}'))
    j.close()
    again = Journal(tmp_path / "a.journal").open()
    assert again.answers == {"t1": StoredAnswer("replies/d", b'{"id":"t1","status":"ok"}')}
    again.close()


def test_a_journal_in_a_read_only_directory_says_which_and_what_to_do(tmp_path):
    from tinydisk import mounted_tmpfs

    from fogmesh.errors import StorageError
    with mounted_tmpfs(tmp_path / "ro", size_kb=64, read_only=True) as ro:
        with pytest.raises(StorageError, match=f"{ro}.*writable"):
            Journal(ro / "a.journal").open()


def test_a_full_disk_fails_one_write_keeps_memory_current_and_recovers_once_freed(tmp_path):
    from tinydisk import fill, mounted_tmpfs

    from fogmesh.errors import StorageError
    with mounted_tmpfs(tmp_path / "disk", size_kb=256) as disk:
        j = Journal(disk / "a.journal").open()
        filler = fill(disk, leave_bytes=2048)
        with pytest.raises(StorageError, match="No space left"):
            for n in range(100):
                j.accepted(f"t{n}", b"x" * 200)
        j.accepted("later", b"y")                      # failed: memory only, no exception again
        assert "later" in j.unfinished and j.failed
        assert not j.retry()
        filler.unlink()
        assert j.retry() and j.failed is None
        j.close()
        again = Journal(disk / "a.journal").open()
        assert "later" in again.unfinished and "t0" in again.unfinished
        again.close()
