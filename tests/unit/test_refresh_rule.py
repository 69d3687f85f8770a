"""The bulk refresh cost rule (core/refresh.py): which path a bucket takes, and the windows it lists."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from jobwatch.core.refresh import DueJob, RefreshPath, RefreshRule, plan_bucket, plan_windows, window_contains

CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 1, 1, 8, 0, tzinfo=CST)


def jobs(n: int, typ: str = "Workflow", step: float = 1.0, start: datetime = T0) -> list[DueJob]:
    return [DueJob(f"{typ[0]}{i}", typ, start + timedelta(seconds=i * step)) for i in range(n)]


def test_many_due_jobs_in_a_bucket_are_listed_in_about_n_over_100_requests():
    plan = plan_bucket(jobs(10_000), slots=32)
    assert plan.path is RefreshPath.LIST
    assert plan.single_requests == 10_000
    assert plan.list_requests <= 10_000 / 50
    assert sum(w.due for w in plan.windows) == 10_000
    assert 1 < len(plan.windows) <= 32


def test_a_few_due_jobs_are_queried_one_by_one():
    plan = plan_bucket(jobs(5), slots=32)
    assert plan.path is RefreshPath.SINGLE and plan.windows == ()
    assert plan.single == tuple(j.job_id for j in jobs(5)) and plan.estimated_requests == 5


def test_a_sparse_span_is_not_listed_when_it_would_cost_more_than_it_saves():
    dense = plan_bucket(jobs(100), slots=4, rule=RefreshRule(density=1.0))
    sparse = plan_bucket(jobs(100), slots=4, rule=RefreshRule(density=50.0))  # 50 other jobs per due job
    assert dense.path is RefreshPath.LIST
    assert sparse.path is RefreshPath.SINGLE and sparse.list_requests > sparse.single_requests / 4


def test_never_observed_jobs_are_always_queried_even_on_the_list_path():
    fresh = [DueJob("new1", None, None), DueJob("new2", "Job", None)]
    plan = plan_bucket(jobs(300) + fresh, slots=8)
    assert plan.path is RefreshPath.LIST
    assert plan.single == ("new1", "new2")
    assert plan.list_requests == 3 + 2


def test_windows_are_per_type_disjoint_whole_seconds_and_cover_every_due_job():
    due = jobs(450, "Workflow", step=0.5) + jobs(120, "Job", step=2.0)
    windows = plan_windows(due, slots=6, rule=RefreshRule())
    for typ in ("Workflow", "Job"):
        mine = [w for w in windows if w.type == typ]
        assert all(w.start.microsecond == 0 and w.end.microsecond == 0 for w in mine)
        assert all(a.end < b.start for a, b in zip(mine, mine[1:]))  # disjoint, in order
        for j in (d for d in due if d.type == typ):
            assert sum(window_contains(w, j.created_at) for w in mine) == 1
    assert sum(w.due for w in windows) == len(due)
    assert len(windows) <= 6 + 1  # each type gets at least one window


def test_a_window_never_splits_one_second():
    # 150 jobs in the same second, then 150 more a second later: the cut after 100 moves to the second boundary
    due = jobs(150, step=0.0) + jobs(150, step=0.0, start=T0 + timedelta(seconds=1))
    windows = plan_windows(due, slots=3, rule=RefreshRule())
    assert [(w.start, w.end, w.due) for w in windows] == [(T0, T0, 150),
                                                         (T0 + timedelta(seconds=1), T0 + timedelta(seconds=1), 150)]


def test_window_edges_are_inclusive_to_the_second():
    w = plan_windows(jobs(3, step=10.0), slots=1, rule=RefreshRule())[0]
    assert (w.start, w.end) == (T0, T0 + timedelta(seconds=20))
    assert window_contains(w, T0) and window_contains(w, T0 + timedelta(seconds=20, microseconds=999_999))
    assert not window_contains(w, T0 - timedelta(microseconds=1))
    assert not window_contains(w, T0 + timedelta(seconds=21))


def test_page_budget_allows_slack_over_the_estimate():
    w = plan_windows(jobs(250), slots=1, rule=RefreshRule(slack=2.0))[0]
    assert w.due == 250 and w.page_budget == 5 + 1


@pytest.mark.parametrize("kw", [{"page_size": 0}, {"page_size": 101}, {"min_due": 0}, {"density": 0.5},
                                {"slack": 0.9}, {"min_saving": 0}])
def test_bad_rule_is_refused(kw):
    with pytest.raises(ValueError):
        RefreshRule(**kw)
