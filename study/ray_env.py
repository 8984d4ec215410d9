"""The environment every Ray process of a study runs with. It must be in place before Ray is
imported: the local driver sets it (``study/driver.py``), and a study submitted to a cluster
passes it in its job's runtime env (``study/cluster.py``), which reaches every worker there."""

RAY_ENV = {
    # Quiet, deterministic runs.
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    # The dashboard's Train page lists Train runs only with state tracking on.
    "RAY_TRAIN_ENABLE_STATE_TRACKING": "1",
    # Worker reports carry per-epoch metrics; the objectives arrive with each trial's final row.
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # Ray Train's controller polls its workers this often (default 2 s); each trial waits about
    # one interval to see its workers start, report and finish: 0.5 s cut start-up + teardown by
    # ~3.5 s per trial (benchmarks/RESULTS.md, "Study start-up").
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
