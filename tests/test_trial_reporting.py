"""A trial's reports reach Tune from its own thread, in order, its final report last, and none
is lost (study/trial.py fit_reporting). With TuneReportCallback, Tune's main thread reported a
fit's epochs while the trial's thread made the final report, and a test study once hung on that
race; the race itself is not forced here (it depends on thread timing). What is checked is what
the fix relies on: every report queued before fit() returns, here all of them at once, reaches
Tune before the final one."""

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import study_env

SCRIPT = textwrap.dedent("""
    import sys

    from ray import tune

    from study import driver
    from study.trial import fit_reporting


    class BurstTrainer:
        # a trainer whose every epoch report arrives just before fit() returns
        def __init__(self, forward):
            self.forward = forward

        def fit(self):
            for epoch in range(1, 9):
                self.forward.after_report(None, [{"epoch": epoch}], None)
            return "fitted"


    def trial(config):
        assert fit_reporting(BurstTrainer) == "fitted"
        tune.report({"epoch": 9, "final": True})


    driver.init_ray(None, num_cpus=2)
    grid = tune.Tuner(trial, tune_config=tune.TuneConfig(num_samples=3),
                      run_config=tune.RunConfig(storage_path=sys.argv[1], name="burst",
                                                verbose=0)).fit()
    for result in grid:
        assert result.error is None, result.error
        print("epochs", *result.metrics_dataframe["epoch"], "final", result.metrics.get("final"))
""")


@pytest.mark.slow
def test_every_report_reaches_tune_in_order_and_the_final_one_last(tmp_path):
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)],
                       env=study_env(tmp_path / "cache"), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = [line for line in p.stdout.splitlines() if line.startswith("epochs")]
    assert lines == ["epochs 1 2 3 4 5 6 7 8 9 final True"] * 3, p.stdout[-3000:]
