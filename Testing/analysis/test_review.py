"""The review queue: ranked suspects, verdicts saved atomically after each one, resume, errors."""

from __future__ import annotations

import csv

import pytest

from HyperSORTModule.SelfTest import AUDIT_RANKS
from HyperSORTLib.analysis.review import (REVIEW_HEADER, ReviewError, ReviewSession, read_review, read_suspects,
                                          review_path)


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_suspects_come_most_suspicious_first_with_their_clusters(audited_run):
    run, _ = audited_run
    suspects = read_suspects(run)
    assert [s.case_id for s in suspects] == sorted(AUDIT_RANKS, key=AUDIT_RANKS.get)
    session = ReviewSession(run, "dr.a")
    assert session.clusters() == ["0", "1"]
    assert [s.case_id for s in session.members("1")] == ["case_004", "case_002"]


def test_every_verdict_is_saved_at_once_and_a_review_resumes(audited_run):
    run, _ = audited_run
    times = iter(["2026-01-01T10:00:00+00:00", "2026-01-01T10:01:00+00:00", "2026-01-01T10:02:00+00:00"])
    session = ReviewSession(run, "dr.a", clock=lambda: next(times))
    first = session.next_case()
    assert first == "case_004"
    session.record(first, "wrong", note="left lobe\nmissing")
    assert _rows(review_path(run)) == [list(REVIEW_HEADER),
                                       ["case_004", "wrong", "left lobe missing", "dr.a", "2026-01-01T10:00:00+00:00"]]
    session.record("case_005", "style")
    assert session.next_case() == "case_002" and session.next_case(after="case_005") == "case_001"

    resumed = ReviewSession(run, "dr.b", clock=lambda: next(times))
    assert resumed.verdict("case_004").reviewer == "dr.a" and resumed.next_case() == "case_002"
    resumed.record("case_004", "correct")  # a second opinion replaces the first
    verdicts = read_review(review_path(run))
    assert [v.case_id for v in verdicts.values()] == ["case_004", "case_005"]  # ranking order
    assert verdicts["case_004"].verdict == "correct" and verdicts["case_004"].reviewer == "dr.b"
    assert resumed.counts() == {"correct": 1, "wrong": 0, "style": 1, "remaining": 4}


def test_a_failed_write_keeps_the_previous_file_and_the_session_state(audited_run, monkeypatch):
    run, _ = audited_run
    session = ReviewSession(run, "dr.a")
    session.record("case_004", "wrong")
    before = review_path(run).read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("HyperSORTLib.analysis.review.atomic_write_text", full_disk)
    with pytest.raises(OSError):
        session.record("case_002", "wrong")
    assert review_path(run).read_bytes() == before and session.verdict("case_002") is None


@pytest.mark.parametrize("case_id,verdict,message", [
    ("case_999", "wrong", "Case 'case_999' is not a sample"),
    ("case_004", "bad", "expected a verdict among correct, wrong, style, found 'bad'")])
def test_bad_verdicts_are_refused(audited_run, case_id, verdict, message):
    run, _ = audited_run
    with pytest.raises(ReviewError, match=message):
        ReviewSession(run).record(case_id, verdict)
    assert not review_path(run).exists()


def test_bad_review_files_name_the_file_and_line(audited_run):
    run, _ = audited_run
    path = review_path(run)
    path.write_text("case_id,verdict,note,reviewer,time\ncase_004,maybe,,a,t\n")
    with pytest.raises(ReviewError, match=r"review.csv, line 2, case 'case_004': expected a verdict"):
        ReviewSession(run)
    path.write_text("case_id,verdict,note,reviewer,time\nnot_a_case,wrong,,a,t\n")
    with pytest.raises(ReviewError, match="not_a_case are not samples"):
        ReviewSession(run)


def test_a_run_without_analysis_says_what_to_run(tiny_run, tmp_path):
    with pytest.raises(ReviewError, match="hypersort analyze"):
        ReviewSession(tmp_path)
