"""A MariaDB deadlock or lock wait timeout rolls a transaction back whole: the store names it LockConflict and
runs the children transactions (claim, record) again, so eight pollers writing children of neighbouring
batches no longer fail their invocation on error 1213."""

from __future__ import annotations

import pytest

from jobwatch.core.errors import LockConflict, StoreError, StoreUnavailable
from jobwatch.store.children_sql import _again_on_lock_conflict
from jobwatch.store.mysql import MysqlStore


def _store() -> MysqlStore:
    return MysqlStore(host="127.0.0.1", port=3306, user="root", password="pw-secret", database="d")


@pytest.mark.parametrize("code, kind", [(1213, LockConflict), (1205, LockConflict), (2013, StoreUnavailable),
                                        (1064, StoreError)])
def test_driver_errors_map_to_the_error_that_says_what_a_retry_can_do(code, kind):
    err = _store()._map(Exception(code, "boom pw-secret"))
    assert type(err) is kind and "pw-secret" not in str(err)


def test_a_transaction_rolled_back_for_a_lock_conflict_runs_again():
    calls = []

    def run():
        calls.append(1)
        if len(calls) < 3:
            raise LockConflict("deadlock")
        return "done"

    assert _again_on_lock_conflict(run) == "done" and len(calls) == 3


def test_lock_conflicts_that_persist_and_other_faults_are_raised():
    def always():
        raise LockConflict("deadlock")

    with pytest.raises(LockConflict):
        _again_on_lock_conflict(always)
    calls = []

    def outage():
        calls.append(1)
        raise StoreUnavailable("gone away")

    with pytest.raises(StoreUnavailable):
        _again_on_lock_conflict(outage)
    assert len(calls) == 1  # an outage is not a lock race: no second run
