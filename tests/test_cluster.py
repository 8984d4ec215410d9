"""The cluster path: cluster.yaml against Ray's own cluster-config schema and its network exposure,
the CLI's one-line errors, and a real two-node Ray cluster on 127.0.0.1 (a head node and a worker
node with distinct custom resources, token authentication on) that runs a smoke study through the
same Ray Jobs path `--cluster` uses. Everything started here is stopped here, by process id."""

import copy
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import psutil
import pytest
import requests
import yaml

from study import cluster, jobs, storage
from study.errors import ClusterError, UsageError
from study.results import read_results

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_YAML = ROOT / "cluster.yaml"
BIN = Path(sys.executable).parent  # the venv's `ray` and `python`
SMOKE = ["--preset", "smoke", "--dataset", "digits", "--no-clip"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*args, env: dict, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "study" / "run.py"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def client_env(home: Path, **extra) -> dict:
    """This machine's environment with a private HOME and no Ray address or token of its own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
            **extra}


def assert_one_line_error(p: subprocess.CompletedProcess, *fragments: str) -> None:
    err = p.stderr.strip()
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert err.count("\n") == 0 and "Traceback" not in err, err
    assert err.startswith("error: ") and all(f in err for f in fragments), err


# ---- cluster.yaml ---------------------------------------------------------------------------


def test_cluster_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # Ray's ray-schema.json and checks
    assert cluster.load_cluster_config(CLUSTER_YAML) == config
    types = config["available_node_types"]
    head, workers = types[config["head_node_type"]], [t for k, t in types.items()
                                                      if k != config["head_node_type"]]
    assert "GPU" not in head["resources"]
    assert all(w["resources"]["GPU"] >= 1 and w["min_workers"] == 0 < w["max_workers"]
               for w in workers)
    assert cluster.max_gpus(config) == 4 and cluster.allows_workers(config)
    assert config["file_mounts"]["~/diffusion-study"] == "."
    assert any("pip install" in c and "-e ~/diffusion-study" in c
               for c in config["setup_commands"])
    # Token authentication stays on across the cluster.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token ray start" in " ".join(config[key])
    assert "~/.ray/auth_token" in config["file_mounts"]


def test_cluster_yaml_opens_only_ssh():
    """Ray's AWS launcher adds intra-cluster traffic and SSH to the security group, then the
    IpPermissions listed here: they must open nothing but port 22 to the outside."""
    config = yaml.safe_load(CLUSTER_YAML.read_text())
    extra = config["provider"]["security_group"]["IpPermissions"]
    assert all((r["FromPort"], r["ToPort"]) == (22, 22) for r in extra)
    for node_type in config["available_node_types"].values():
        assert "SecurityGroupIds" not in node_type["node_config"]  # the launcher's group is used
    ports = "8265", "6379", "10001"
    text = CLUSTER_YAML.read_text()
    assert not any(f"FromPort: {p}" in text or f'"FromPort": {p}' in text for p in ports)


# ---- one-line errors --------------------------------------------------------------------------


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    ("cluster_name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "not a Ray cluster config"),
    ("cluster_name: x\nprovider: {type: aws}\n", "missing available_node_types, head_node_type"),
    ("schema", "max_workers: 'many' is not of type 'integer'"),
])
def test_bad_cluster_file_is_one_line(content, match, tmp_path):
    path = tmp_path / "cluster.yaml"
    if content == "schema":
        content = CLUSTER_YAML.read_text().replace("max_workers: 4\n", "max_workers: many\n", 1)
    if content is not None:
        path.write_text(content)
    p = run_cli("--cluster", str(path), "--storage-path", "s3://bucket/runs", *SMOKE,
                env=client_env(tmp_path))
    assert_one_line_error(p, str(path), match)


@pytest.mark.skipif(importlib.util.find_spec("boto3") is not None,
                    reason="with boto3 installed the launcher would call AWS")
def test_cluster_needs_boto3_before_any_cloud_call(tmp_path):
    p = run_cli("--cluster", str(CLUSTER_YAML), "--storage-path", "s3://bucket/runs", *SMOKE,
                env=client_env(tmp_path))
    assert_one_line_error(p, "needs boto3")


def test_jobs_path_needs_storage_path(tmp_path):
    p = run_cli("--address", f"http://127.0.0.1:{free_port()}", *SMOKE, env=client_env(tmp_path))
    assert_one_line_error(p, "--storage-path is required")


def test_unreachable_address_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    p = run_cli("--address", url, "--storage-path", str(tmp_path), *SMOKE,
                env=client_env(tmp_path))
    assert_one_line_error(p, f"cannot reach the Ray dashboard at {url}")


def test_job_argv_drops_client_options():
    argv = ["--cluster", "c.yaml", "--preset", "gpu", "--output-dir=/here", "--address",
            "http://h:8265", "--name", "old", "--storage-path", "s3://b/r"]
    assert jobs.job_argv(argv, "new", 4) == [
        "--preset", "gpu", "--storage-path", "s3://b/r", "--name", "new", "--gpus", "4"]


def test_storage_path_kinds():
    assert storage.is_remote("s3://bucket/runs") and storage.is_remote("gs://bucket/runs")
    assert not storage.is_remote("/mnt/nfs/runs") and not storage.is_remote(None)
    assert storage.tune_storage("s3://bucket/runs/", "n") == "s3://bucket/runs/n/ray"
    assert storage.tune_storage("/mnt/nfs/runs", "n") is None
    assert storage.study_root("/mnt/nfs", Path("runs")) == Path("/mnt/nfs")
    assert storage.study_root("s3://b/r", Path("runs")) == Path("runs")
    with pytest.raises(ClusterError, match="s3:// or gs://"):
        storage.check_storage_path("ftp://host/runs")
    storage.refuse_node_local("s3://b/r", False, "2 nodes")
    storage.refuse_node_local("/mnt/nfs", True, "2 nodes")
    with pytest.raises(ClusterError, match="node-local, but 2 nodes"):
        storage.refuse_node_local("/tmp/x", False, "2 nodes")


def test_push_and_pull_study_round_trip(tmp_path):
    """The object-store path with pyarrow's local filesystem standing in for S3."""
    study = tmp_path / "local" / "s"
    (study / "trials" / "t1").mkdir(parents=True)
    (study / "results.csv").write_text("trial_id\nt1\n")
    (study / "trials" / "t1" / "samples.npz").write_bytes(b"npz")
    (study / "ray").mkdir()
    (study / "ray" / "stale").write_text("Tune's state lives in the store already")
    store = f"file://{tmp_path / 'store'}"
    storage.push_study(study, store, "s")
    assert (tmp_path / "store" / "s" / "trials" / "t1" / "samples.npz").read_bytes() == b"npz"
    assert not (tmp_path / "store" / "s" / "ray").exists()
    back = tmp_path / "back"
    assert storage.pull_study(store, "s", back) and not storage.pull_study(store, "none", back)
    assert (back / "results.csv").read_text() == "trial_id\nt1\n"


def test_gpu_worker_type_without_gpu_resources_is_refused(tmp_path):
    """A GPU instance type whose node type does not declare its GPUs would run the study on CPU
    (the study plans for declared GPUs only): refused with one line naming the type."""
    text = CLUSTER_YAML.read_text()
    assert 'resources: {"GPU": 1}' in text
    path = tmp_path / "cluster.yaml"
    path.write_text(text.replace('resources: {"GPU": 1}', "resources: {}", 1))
    with pytest.raises(ClusterError, match=r"node type \w+ \(g5\.xlarge\) has GPUs but no 'GPU' "
                                           r"in its resources.*GPU: 1"):
        cluster.load_cluster_config(path)
    config = yaml.safe_load(text)
    gpu_type = next(k for k in config["available_node_types"] if k != config["head_node_type"])
    node = config["available_node_types"][gpu_type]
    for node_config in ({"machineType": "n1-standard-8", "guestAccelerators": [
            {"acceleratorType": "nvidia-tesla-t4", "acceleratorCount": 1}]},
            {"azure_arm_parameters": {"vmSize": "Standard_NC6s_v3"}},
            {"InstanceType": "p4d.24xlarge"}):
        node.update(node_config=node_config, resources={"CPU": 8})
        with pytest.raises(ClusterError, match="has GPUs but no 'GPU'"):
            cluster.check_gpu_types(config, path)
        node["resources"]["GPU"] = 1
        cluster.check_gpu_types(config, path)  # declared: fine
    node.update(node_config={"InstanceType": "m5.xlarge"}, resources={"CPU": 4})
    cluster.check_gpu_types(config, path)  # a CPU type needs no GPU line


def test_oversized_cluster_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "cluster.yaml"
    with open(path, "wb") as f:
        f.truncate(2 * cluster.CLUSTER_YAML_BYTES)
    with pytest.raises(UsageError, match="--cluster .*more than the 1048576"):
        cluster.load_cluster_config(path)


# ---- the object-store mirror (pyarrow's local filesystem stands in for S3) -------------------


@pytest.fixture
def store_study(tmp_path, monkeypatch):
    """A study directory whose Tune storage is an object-store URI (file://, as pyarrow reads
    s3:// and gs://), with its study.json, judge and a trial's files."""
    from dataclasses import replace

    from study.run import build_spec, parse_args
    from study.spec import StudyRecord

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    spec = build_spec(parse_args([*SMOKE, "--name", "m", "--output-dir", str(tmp_path / "runs")]))
    spec = replace(spec, tune_storage=f"file://{tmp_path / 'store'}/m/ray")
    spec.layout.trial("t1").root.mkdir(parents=True)
    StudyRecord(spec).save(spec.layout)
    for name in ("judge.pt", "reference.json"):
        (spec.layout.root / name).write_text(name)
    (spec.layout.trial("t1").outcome).write_text('{"history": []}')
    return spec


def test_a_finished_trial_reaches_the_object_store_when_its_row_is_written(store_study,
                                                                         tmp_path):
    """The Finalizer's row, the trial's folder, the table and study.json are uploaded as soon
    as the row is written; the Optuna database as soon as Optuna is told (a consistent SQLite
    snapshot). Nothing waits for the study's end, which a stopped job never reaches."""
    import optuna

    from study.finalize import get_finalizer
    from study.search import StudySearch

    store = tmp_path / "store" / "m"
    spec = store_study
    search = StudySearch(study_dir=spec.study_dir, study_name="m", seed=0,
                         storage=optuna.storages.RDBStorage(spec.storage))
    search.set_search_properties(None, None, spec.space.to_tune())
    params = search.suggest("t1")
    row = get_finalizer(spec.study_dir)("t1", {"error": "boom"}, params)
    assert row["status"] == "failed"
    assert (store / "trials" / "t1" / "outcome.json").read_text() == '{"history": []}'
    assert read_results(store).set_index("trial_id").loc["t1", "error"] == "boom"
    assert (store / "study.json").read_bytes() == (spec.layout.spec).read_bytes()
    assert (store / "judge.pt").read_text() == "judge.pt"
    assert not (store / "ray").exists() and not (store / ".lock").exists()
    search.on_trial_complete("t1", None, error=True)  # Optuna told: FAIL
    told = optuna.load_study(study_name="m", storage=f"sqlite:///{store / 'optuna.db'}")
    assert [t.state.name for t in told.trials] == ["FAIL"]


def test_a_failed_upload_warns_and_the_trial_goes_on(store_study, capsys):
    from study.mirror import Mirror

    mirror = Mirror(store_study.layout, "file:///proc/no-such-store/m")  # not writable
    mirror.after_row("t1")
    err = capsys.readouterr().err
    assert "warning: could not copy trial t1 to file:///proc/no-such-store/m" in err
    assert "copied again when the study ends" in err


# ---- `--cluster` bring-up against a fake launcher and Jobs client ----------------------------

FAKE_DASHBOARD = """
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Dashboard(BaseHTTPRequestHandler):
    def do_GET(self):
        nodes = [{"state": "ALIVE", "node_id": str(i), "resources_total": {"GPU": i}}
                 for i in range(int(sys.argv[2]))]
        body = json.dumps({"data": {"result": {"result": nodes}}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", int(sys.argv[1])), Dashboard).serve_forever()
"""


class FakeLauncher(cluster.Launcher):
    """Ray's cluster launcher without a cloud: records each step, fails the one it is told to.
    Its "SSH tunnel" is a process serving the dashboard's nodes API on the forwarded port."""

    def __init__(self, calls: list, fail: str | None = None, nodes: int = 2):
        self.calls, self.fail, self.nodes, self.tunnels = calls, fail, nodes, []

    def ensure_token(self):
        self.calls.append("token")
        if self.fail == "token":
            raise PermissionError(13, "Permission denied", "/home/me/.ray/auth_token")

    def up(self, config):
        self.calls.append("up")
        if self.fail == "up":
            raise RuntimeError("InsufficientInstanceCapacity: no g5.xlarge in us-west-2a")
        return "10.0.0.1"

    def tunnel(self, config_file, port):
        self.calls.append("tunnel")
        assert yaml.safe_load(Path(config_file).read_text())["cluster_name"]
        code = "raise SystemExit(3)" if self.fail == "tunnel" else FAKE_DASHBOARD
        self.tunnels.append(subprocess.Popen([sys.executable, "-c", code, str(port),
                                              str(self.nodes)], start_new_session=True))
        return self.tunnels[-1]

    def rsync_down(self, config, source, target):
        self.calls.append("fetch")
        if self.fail == "fetch":
            raise RuntimeError("rsync: connection unexpectedly closed")
        Path(target, "results.csv").write_text("trial_id,status\nt1,ok\n")


class FakeJobs:
    """JobSubmissionClient's calls that submit() makes, recorded."""

    def __init__(self, calls: list, fail: str | None = None):
        self.calls, self.fail, self.submitted = calls, fail, {}

    def __call__(self, url, headers=None):  # the client factory
        self.calls.append("client")
        self.url = url
        return self

    def submit_job(self, **kwargs):
        self.calls.append("submit")
        if self.fail == "submit":
            raise RuntimeError("Request failed with status code 500: Internal Server Error.")
        self.submitted = kwargs
        return kwargs["submission_id"]

    def get_job_status(self, job_id):
        from ray.job_submission import JobStatus

        if self.fail == "ctrl-c":
            raise KeyboardInterrupt
        self.calls.append("status")
        return JobStatus.FAILED if self.fail == "job" else JobStatus.SUCCEEDED

    async def tail_job_logs(self, job_id):
        yield "study bring-up: 1 trial\n"

    def get_job_info(self, job_id):
        return SimpleNamespace(message="Job entrypoint command failed with exit code 1")


@pytest.fixture
def bring_up(tmp_path, monkeypatch):
    """`bring_up(fail)` runs jobs.submit for cluster.yaml with the fakes failing at `fail`:
    (exit status or the ClusterError, the recorded calls, the launcher, the jobs client)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config = cluster.load_cluster_config(CLUSTER_YAML)
    config["provider"]["type"] = "fake"  # (an AWS one would need boto3 first)

    def run(fail=None):
        calls = []
        launcher, client = FakeLauncher(calls, fail), FakeJobs(calls, fail)
        argv = [*SMOKE, "--cluster", str(CLUSTER_YAML), "--storage-path", "/mnt/efs/runs",
                "--shared-fs", "--storage", "postgresql://me:hunter2@db.internal/optuna"]
        try:
            code = jobs.submit(argv, name="up", output_dir=tmp_path / "out",
                               storage_path="/mnt/efs/runs", shared_fs=True, config=config,
                               launcher=launcher, client_factory=client)
        except ClusterError as e:
            code = e
        for t in launcher.tunnels:  # every tunnel the bring-up opened was closed again
            assert t.wait(timeout=10) is not None
        return code, calls, launcher, client

    return run


def test_bring_up_runs_every_step_in_order(bring_up, capsys):
    code, calls, _, client = bring_up()
    assert code == 0, code
    assert calls == ["token", "up", "tunnel", "client", "submit", "status", "fetch"]
    out = capsys.readouterr().out
    assert "cluster diffusion-study: head node 10.0.0.1; Ray dashboard (SSH tunnel): " \
           "http://127.0.0.1:" in out and "[job study-up-" in out and "SUCCEEDED" in out
    job = client.submitted
    assert job["metadata"] == {"study": "up", "storage_path": "/mnt/efs/runs"}
    assert job["entrypoint"].startswith("python study/run.py --preset smoke")
    assert "--gpus 4 " in job["entrypoint"] + " " and "--cluster" not in job["entrypoint"]
    # The storage password reaches the job through its environment, never its command line.
    assert "hunter2" not in job["entrypoint"] + out and "me@db.internal" in job["entrypoint"]
    assert job["runtime_env"]["env_vars"]["STUDY_STORAGE_PASSWORD"] == "hunter2"


@pytest.mark.parametrize("fail, steps, match", [
    ("token", ["token"], "cannot create the cluster's token file"),
    ("up", ["token", "up"], "could not bring up cluster diffusion-study: RuntimeError: "
                            "InsufficientInstanceCapacity"),
    ("tunnel", ["token", "up", "tunnel"], r"SSH tunnel to the dashboard ended \(exit 3\)"),
    ("submit", ["token", "up", "tunnel", "client", "submit"],
     r"could not submit the study job to http://127\.0\.0\.1:\d+: RuntimeError: Request "
     r"failed with status code 500"),
])
def test_a_failed_bring_up_step_stops_there_with_one_line(bring_up, fail, steps, match):
    """Each step's failure is a ClusterError (one line, exit 2 from the CLI) and nothing after
    it runs: no job without a tunnel, no tunnel without a cluster."""
    code, calls, _, _ = bring_up(fail)
    assert isinstance(code, ClusterError) and "\n" not in str(code), code
    assert re.search(match, str(code)), code
    assert calls == steps


def test_a_failed_job_is_reported_and_its_study_still_fetched(bring_up, capsys):
    code, calls, _, _ = bring_up("job")
    assert code == 1 and calls[-1] == "fetch"
    assert "FAILED: Job entrypoint command failed with exit code 1" in capsys.readouterr().err


def test_a_failed_fetch_says_where_the_study_is(bring_up, capsys):
    code, calls, _, _ = bring_up("fetch")
    err = capsys.readouterr().err.strip()
    assert code == 1 and calls[-1] == "fetch" and err.count("\n") == 0
    assert err.startswith("error: could not fetch the study directory from /mnt/efs/runs/up")
    assert "resume with --resume --name up" in err


def test_ctrl_c_while_following_detaches_and_closes_the_tunnel(bring_up, capsys):
    code, calls, _, _ = bring_up("ctrl-c")
    assert code == 130 and "fetch" not in calls
    assert "detached; job study-up-" in capsys.readouterr().err


def test_cluster_bring_up_failure_through_the_cli_is_one_line(tmp_path, monkeypatch, capsys):
    """The same failure through study/run.py's main: exit status 2, one line on stderr."""
    from study.run import main

    calls = []
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(jobs, "Launcher", lambda: FakeLauncher(calls, "up"))
    monkeypatch.setattr(cluster.importlib.util, "find_spec", lambda name: object())  # "boto3"
    code = main(["--cluster", str(CLUSTER_YAML), "--storage-path", "s3://bucket/runs", *SMOKE])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0, err
    assert err.startswith("error: could not bring up cluster diffusion-study") and calls == [
        "token", "up"]


# ---- a real two-node cluster on 127.0.0.1 ---------------------------------------------------


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """`ray start --block` in its own process group: SIGTERM stops the node it started."""
    with open(log, "w") as f:
        return subprocess.Popen([str(BIN / "ray"), "start", "--block", *args], env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen], grace_s: float = 10) -> None:
    """SIGTERM to each node's process group (as `ray stop` does per process), then SIGKILL;
    then every process these nodes started that is still alive (actors run in groups of their
    own), by process id."""
    started = [c for p in procs if p.poll() is None
               for c in psutil.Process(p.pid).children(recursive=True)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    _, alive = psutil.wait_procs(started, timeout=5)
    for c in alive:
        c.kill()
    psutil.wait_procs(alive, timeout=5)


def _wait(check, what: str, procs, timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), f"a Ray node exited while waiting for {what}"
        try:
            if check():
                return
        except (requests.RequestException, ClusterError, KeyError):
            pass
        time.sleep(1)
    raise TimeoutError(what)


@pytest.fixture(scope="module")
def two_nodes():
    tmp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths
    token_file = tmp / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    env = {**client_env(tmp / "home"), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token_file), "STUDY_CACHE_DIR": str(tmp / "cache"),
           "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
           "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # the job's `python`
    procs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))  # for jobs.api_get in this process
        mp.delenv("RAY_AUTH_TOKEN", raising=False)
        try:
            yield from _two_nodes(tmp, env, token_file, procs)
        finally:
            _stop(procs)
            shutil.rmtree(tmp, ignore_errors=True)


def _two_nodes(tmp: Path, env: dict, token_file: Path, procs: list):
    """Head node (custom resource "head", the dashboard) then a worker node ("trainer")."""
    gcs, dash = free_port(), free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=200000000",
              "--disable-usage-stats"]
    procs.append(_start(["--head", f"--port={gcs}", *common, '--resources={"head": 1}',
                         "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                         f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
                         f"--dashboard-agent-listen-port={free_port()}",
                         f"--temp-dir={tmp / 'ray'}"], env, tmp / "head.log"))
    url = f"http://127.0.0.1:{dash}"
    headers = {"Authorization": f"Bearer {token_file.read_text()}"}
    _wait(lambda: requests.get(url + "/api/version", headers=headers, timeout=5).ok,
          "the head node's dashboard", procs)

    def start_worker(tag: str = "w") -> subprocess.Popen:
        # Its own temp dir: two nodes on one machine must not share runtime_resources/ (each
        # node's runtime-env agent deletes unused working directories there).
        procs.append(_start([f"--address=127.0.0.1:{gcs}", *common,
                             '--resources={"trainer": 1}',
                             f"--dashboard-agent-listen-port={free_port()}",
                             f"--temp-dir={tmp / f'ray-{tag}'}"], env, tmp / f"{tag}.log"))
        _wait(lambda: len(jobs.alive_nodes(url)) == 2, "two alive nodes", procs)
        return procs[-1]

    yield SimpleNamespace(url=url, env=env, headers=headers, tmp=tmp, worker=start_worker(),
                          start_worker=start_worker, procs=procs)


@pytest.mark.slow
def test_node_local_storage_is_refused_on_two_nodes(two_nodes, tmp_path):
    p = run_cli("--address", two_nodes.url, "--storage-path", str(tmp_path), *SMOKE,
                env=two_nodes.env)
    assert_one_line_error(p, "is node-local", "has 2 nodes", "--shared-fs")


@pytest.mark.slow
@pytest.mark.parametrize("token, match", [
    ("not-the-token", "refused the token (HTTP 403)"),
    (None, "requires a token (HTTP 401)"),
])
def test_bad_or_missing_token_is_one_line(two_nodes, tmp_path, token, match):
    env = {k: v for k, v in two_nodes.env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token here
    if token:
        env["RAY_AUTH_TOKEN"] = token
    p = run_cli("--address", two_nodes.url, "--storage-path", str(tmp_path), "--shared-fs",
                *SMOKE, env=env)
    assert_one_line_error(p, match)


@pytest.mark.slow
def test_study_job_spans_both_nodes_survives_losing_one_and_being_stopped(two_nodes, tmp_path,
                                                                         live):
    """A smoke study submitted as a Ray Job: each trial's two DDP workers run one per node. The
    worker node is stopped while the first trial trains on it and a replacement node joins (as
    the autoscaler would bring one up); the trial resumes from its checkpoint. Then the job
    itself is stopped (`ray job stop`, as the client suggests) while the second trial trains:
    the first trial's row is already on the shared storage path, and the study resubmitted with
    --resume loses only the running trial's progress since its checkpoint, and comes back
    complete with its table, Tune's state and Optuna agreeing. One study serves all checks:
    each costs ~90 s of Ray start-up and training on 2 cores."""
    from ray.job_submission import JobSubmissionClient

    shared, fetched = tmp_path / "shared", tmp_path / "fetched"
    cmd = [sys.executable, str(ROOT / "study" / "run.py"), "--address", two_nodes.url,
           "--storage-path", str(shared), "--shared-fs", "--output-dir", str(fetched),
           "--name", "two", "--epochs", "5", "--verbose", *SMOKE]  # worker lines, as they come
    run = live(cmd, two_nodes.env, timeout_s=600)
    job_id = run.until(r"submitted job (\S+):")[1]
    first = run.until(r"\[two_train_(\w+?)_d\d+w\d+\] epoch +1 ")[1]
    lost = jobs.alive_nodes(two_nodes.url)
    node = two_nodes.procs.index(two_nodes.worker)
    _stop([two_nodes.procs.pop(node)])  # SIGTERM its processes, then SIGKILL what is left
    two_nodes.worker = two_nodes.start_worker("w2")
    run.until(rf"trial {first} d\d+ w\d+ .*: ok")
    while (m := run.until(r"\[two_train_(\w+?)_d\d+w\d+\] epoch +(\d+) "))[1] == first:
        pass
    second, epoch = m[1], int(m[2])
    assert epoch < 5, "the second trial was not stopped mid-training"
    JobSubmissionClient(two_nodes.url, headers=two_nodes.headers).stop_job(job_id)
    assert run.finish() == 1, run.log()
    assert f"job {job_id} STOPPED" in "".join(run.lines)
    # Durable before the study's end: the finished trial's row and files are on the path.
    stopped = read_results(shared / "two").set_index("trial_id")
    assert list(stopped.index) == [first] and stopped.loc[first, "status"] == "ok"
    assert (shared / "two" / stopped.loc[first, "checkpoint_path"]).stat().st_size > 0

    again = live([*cmd, "--resume"], two_nodes.env, timeout_s=600)
    assert again.finish() == 0, again.log()
    log = "".join(run.lines + again.lines)
    # The job's status, and its logs streamed back: the resumes and the driver's summary.
    assert "SUCCEEDED" in log and "Pareto front" in log
    assert "resuming after epoch" in "".join(run.lines)  # the first trial, on the new node
    assert "resuming after epoch" in "".join(again.lines)  # the second, after the job stop

    # The study directory came back complete, the first trial's row as it was.
    study = fetched / "two"
    df = read_results(study)
    assert len(df) == 2 and (df["status"] == "ok").all(), df[["status", "error"]]
    assert set(df["trial_id"]) == {first, second}  # the stopped trial finished, no new one
    resumed = df.set_index("trial_id").loc[first]
    assert resumed["epochs_run"] == 5 and resumed["stop_reason"] == "completed"
    assert resumed["trial_wall_s"] == stopped.loc[first, "trial_wall_s"]
    ot = optuna.load_study(study_name="two", storage=f"sqlite:///{study / 'optuna.db'}")
    assert sorted(t.state.name for t in ot.trials) == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["lr"] for t in ot.trials) == sorted(df["lr"])
    state = json.loads(max((study / "ray" / "two").glob("experiment_state-*.json")).read_text())
    assert {json.loads(d)["trial_id"] for d, _ in state["trial_data"]} == set(df["trial_id"])
    for f in ("study.json", "reference.json", "optuna.db", "judge.pt"):
        assert (study / f).stat().st_size > 0, f
    for col in ("samples_path", "grid_path", "checkpoint_path"):
        assert all((study / rel).stat().st_size > 0 for rel in df[col])
    assert (study / "ray" / "two").is_dir()  # Tune's state, written to the shared path

    # The dashboard's HTTP API, with the token: the job, the nodes, and where workers ran.
    listed = requests.get(two_nodes.url + "/api/jobs/", headers=two_nodes.headers,
                          timeout=30).json()
    studies = [j for j in listed if (j.get("metadata") or {}).get("study") == "two"]
    assert sorted(j["status"] for j in studies) == ["STOPPED", "SUCCEEDED"]
    job = next(j for j in studies if j["status"] == "SUCCEEDED")
    assert job["submission_id"].startswith("study-two-")
    assert job["entrypoint"].startswith("python study/run.py") and "--address" not in \
        job["entrypoint"] and "--output-dir" not in job["entrypoint"]
    nodes = jobs.api_get(two_nodes.url, "/api/v0/nodes", limit=100)["data"]["result"]["result"]
    dead = {n["node_id"] for n in nodes if n["state"] == "DEAD"}
    alive = {n["node_id"] for n in jobs.alive_nodes(two_nodes.url)}
    assert dead == {n["node_id"] for n in lost} - alive and len(dead) == 1  # the stopped node
    assert len(alive) == 2  # the head and the replacement
    actors = jobs.api_get(two_nodes.url, "/api/v0/actors", limit=1000, detail="true",
                          filter_keys="class_name", filter_predicates="=",
                          filter_values="RayTrainWorker")["data"]["result"]["result"]
    assert len(actors) >= 6  # 2 DDP workers: trial 1 before and after the loss, trial 2
    assert {a["node_id"] for a in actors} == dead | alive

    # Train runs carry the study name, trial id and model (the dashboard's Train page).
    runs = requests.get(two_nodes.url + "/api/train/v2/runs/v1", headers=two_nodes.headers,
                        timeout=30).json()["train_runs"]
    assert {r["name"] for r in runs} >= {f"two_train_{r.trial_id}_d{r.depth}w{r.width}"
                                         for r in df.itertuples()}

    # Without the token the same API answers 401.
    assert requests.get(two_nodes.url + "/api/v0/nodes", timeout=30).status_code == 401
