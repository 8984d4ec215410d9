"""The cluster path: cluster.yaml against Ray's own cluster-config schema and its network exposure,
the CLI's one-line errors, and a real two-node Ray cluster on 127.0.0.1 (a head node and a worker
node with distinct custom resources, token authentication on) that runs a smoke study through the
same Ray Jobs path `--cluster` uses. Everything started here is stopped here, by process id."""

import copy
import importlib.util
import os
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

import psutil
import pytest
import requests
import yaml

from study import cluster, jobs, storage
from study.errors import ClusterError
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
def test_study_job_spans_both_nodes_survives_losing_one_and_comes_back(two_nodes, tmp_path,
                                                                       live):
    """A smoke study submitted as a Ray Job: each trial's two DDP workers run one per node. The
    worker node is stopped while the first trial trains on it and a replacement node joins (as
    the autoscaler would bring one up); the trial resumes from its checkpoint, the second trial
    runs on the new node, and the study directory comes back complete. One study serves both
    checks: each costs ~90 s of Ray start-up and training on 2 cores."""
    shared, fetched = tmp_path / "shared", tmp_path / "fetched"
    run = live([sys.executable, str(ROOT / "study" / "run.py"), "--address", two_nodes.url,
                "--storage-path", str(shared), "--shared-fs", "--output-dir", str(fetched),
                "--name", "two", "--epochs", "5", *SMOKE], two_nodes.env, timeout_s=600)
    first = run.until(r"\[two_train_(\w+?)_d\d+w\d+\] epoch +1 ")[1]
    lost = jobs.alive_nodes(two_nodes.url)
    node = two_nodes.procs.index(two_nodes.worker)
    _stop([two_nodes.procs.pop(node)])  # SIGTERM its processes, then SIGKILL what is left
    two_nodes.worker = two_nodes.start_worker("w2")
    assert run.finish() == 0, run.log()
    log = "".join(run.lines)
    # The job's status, and its logs streamed back: the resume and the driver's summary.
    assert "SUCCEEDED" in log and "resuming after epoch" in log and "Pareto front" in log

    # The study directory came back complete.
    study = fetched / "two"
    df = read_results(study)
    assert len(df) == 2 and (df["status"] == "ok").all(), df[["status", "error"]]
    resumed = df.set_index("trial_id").loc[first]
    assert resumed["epochs_run"] == 5 and resumed["stop_reason"] == "completed"
    for f in ("study.json", "reference.json", "optuna.db", "judge.pt"):
        assert (study / f).stat().st_size > 0, f
    for col in ("samples_path", "grid_path", "checkpoint_path"):
        assert all((study / rel).stat().st_size > 0 for rel in df[col])
    assert (study / "ray" / "two").is_dir()  # Tune's state, written to the shared path

    # The dashboard's HTTP API, with the token: the job, the nodes, and where workers ran.
    listed = requests.get(two_nodes.url + "/api/jobs/", headers=two_nodes.headers,
                          timeout=30).json()
    job = next(j for j in listed if (j.get("metadata") or {}).get("study") == "two")
    assert job["status"] == "SUCCEEDED" and job["submission_id"].startswith("study-two-")
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
