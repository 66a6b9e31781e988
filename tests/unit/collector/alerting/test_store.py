from collector.alerting.store import AlertStore
from tests.unit.collector.alerting.helpers import T0


def _write(store: AlertStore, added: dict[str, tuple[str, float]], prune_before: float, max_rows: int | None) -> None:
    with store.transaction() as db:
        store.apply_finished(db, added, prune_before, max_rows)


def test_the_finished_table_is_pruned_by_age_and_by_row_count(tmp_path):
    store = AlertStore(tmp_path / "alerts.db")
    _write(store, {f"k{n}": ("ts", T0 + n) for n in range(10)}, T0, 8)
    assert [key for key, _, _ in store.load_finished(T0)] == [f"k{n}" for n in range(2, 10)]
    _write(store, {"k3": ("ts2", T0 + 20)}, T0, 8)  # rewritten: now the newest, k2 goes
    assert [key for key, _, _ in store.load_finished(T0)] == [f"k{n}" for n in range(4, 10)] + ["k3"]
    assert store.finished_rows() == 7  # a rewrite leaves a gap in the rowids: the bound errs low, never high
    _write(store, {}, T0 + 8, None)  # by age only
    assert [key for key, _, _ in store.load_finished(T0)] == ["k8", "k9", "k3"]
    _write(store, {f"m{n}": ("ts", T0 + 30 + n) for n in range(20_000)}, T0, 5_000)
    assert store.finished_rows() == 5_000
    store.close()


def test_load_finished_returns_the_newest_rows_oldest_first(tmp_path):
    store = AlertStore(tmp_path / "alerts.db")
    _write(store, {f"k{n}": (f"ts{n}", T0 + n) for n in range(100)}, 0.0, None)
    assert store.load_finished(T0 + 90) == [(f"k{n}", f"ts{n}", T0 + n) for n in range(90, 100)]
    assert store.load_finished(T0, 3) == [(f"k{n}", f"ts{n}", T0 + n) for n in range(97, 100)]
    assert len(store.load_finished(T0)) == 100 and store.load_finished(T0, 0) == []
    store.close()
