"""Interop: DuckDB and pyarrow read the Parquet history (hive partitions date=YYYY-MM-DD) that ChaosEater
writes, and get the same counts and aggregates as `chaoseater sql` over the same files.

Needs CHAOSEATER_BIN (set by .ci/run).
"""

import json
import os
import pathlib
import subprocess

import duckdb
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("CHAOSEATER_BIN", str(ROOT / "target" / "release" / "chaoseater"))
ROWS = 6000


def chaoseater(*args, cwd):
    return subprocess.run([BIN, *args], capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("history")
    out = chaoseater("history", "generate", "--rows", str(ROWS), "--days", "20", "--seed", "3", "--history", str(tmp / "h"), cwd=tmp)
    assert out.returncode == 0, out.stderr
    return tmp / "h"


def ours(history, sql):
    out = chaoseater("sql", "--format", "json", "--history", str(history), sql, cwd=history.parent)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def test_duckdb_reads_the_same_counts_and_aggregates(history):
    con = duckdb.connect()
    glob = f"read_parquet('{history}/experiments/*/*.parquet', hive_partitioning = true)"
    n, ids, mean, median, p95, recovery = con.execute(
        f"SELECT count(*), count(DISTINCT event_id), avg(resilience_score), median(resilience_score), "
        f"quantile_cont(resilience_score, 0.95), avg(recovery_time_s) FROM {glob}"
    ).fetchone()
    [mine] = ours(
        history,
        "SELECT count(*) AS n, count(DISTINCT event_id) AS ids, avg(resilience_score) AS mean, "
        "median(resilience_score) AS median, percentile_cont(0.95) WITHIN GROUP (ORDER BY resilience_score) AS p95, "
        "avg(recovery_time_s) AS recovery FROM experiments",
    )
    assert (n, ids) == (mine["n"], mine["ids"]) == (ROWS, ROWS)
    for theirs, key in [(mean, "mean"), (median, "median"), (p95, "p95"), (recovery, "recovery")]:
        assert close(theirs, mine[key]), (key, theirs, mine[key])

    # Partitions and grouping: per day and per layer, the same counts and means.
    theirs = con.execute(
        f"SELECT CAST(date AS VARCHAR) AS d, layer, count(*), avg(resilience_score) FROM {glob} GROUP BY ALL ORDER BY d, layer"
    ).fetchall()
    mine = ours(
        history,
        "SELECT date AS d, layer, count(*) AS n, avg(resilience_score) AS mean FROM experiments GROUP BY date, layer ORDER BY d, layer",
    )
    assert len(theirs) == len(mine) > 20
    for (d, layer, n, mean), row in zip(theirs, mine):
        assert (d, layer, n) == (row["d"], row["layer"], row["n"])
        assert (mean is None and row["mean"] is None) or close(mean, row["mean"])

    # Tags and parameters join back to their experiments.
    tagged = con.execute(
        f"SELECT count(*) FROM {glob} e WHERE run_id IN (SELECT run_id FROM read_parquet('{history}/tags/*/*.parquet', "
        "hive_partitioning = true) WHERE key = 'team' AND value = 'search')"
    ).fetchone()[0]
    [mine] = ours(history, "SELECT count(*) AS n FROM experiments WHERE run_id IN (SELECT run_id FROM tags WHERE key = 'team' AND value = 'search')")
    assert tagged == mine["n"] > 0
    params = con.execute(f"SELECT count(*), sum(number) FROM read_parquet('{history}/parameters/*/*.parquet', hive_partitioning = true)").fetchone()
    [mine] = ours(history, "SELECT count(*) AS n, sum(number) AS s FROM parameters")
    assert params[0] == mine["n"] == ROWS and close(params[1], mine["s"])


def test_pyarrow_reads_the_same_rows_with_real_types(history):
    dataset = ds.dataset(history / "experiments", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == ROWS
    assert str(table.schema.field("finished_at").type) == "timestamp[ms, tz=UTC]"
    assert str(table.schema.field("resilience_score").type) == "double"
    assert str(table.schema.field("error_count").type) == "int64"
    [mine] = ours(history, "SELECT avg(resilience_score) AS mean, sum(error_count) AS errors, count(resilience_score) AS scored FROM experiments")
    assert close(pc.mean(table["resilience_score"]).as_py(), mine["mean"])
    assert pc.sum(table["error_count"]).as_py() == mine["errors"]
    assert pc.count(table["resilience_score"]).as_py() == mine["scored"]
    completed = table.filter(pc.equal(table["status"], "COMPLETED")).num_rows
    [mine] = ours(history, "SELECT count(*) AS n FROM experiments WHERE status = 'COMPLETED'")
    assert completed == mine["n"]
