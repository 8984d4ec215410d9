"""Run the study on a Ray cluster as a Ray Job, with results where every node can reach them.

    python study/run.py --cluster cluster.yaml --storage-path s3://my-bucket/runs --preset gpu
    python study/run.py --address http://127.0.0.1:8265 --storage-path /mnt/nfs/runs --shared-fs

Client (``submit``): bring the cluster up from cluster.yaml with Ray's cluster-launcher SDK (or
reuse it) and forward its dashboard to 127.0.0.1 over SSH, or attach to ``--address``; submit
``study/run.py`` with the same study options as a Ray Job; stream its logs and status; fetch
<storage-path>/<name>/ into --output-dir. Job (study/run.py on the head node): on a shared mount
the study directory is <storage-path>/<name>/ itself; with s3:// or gs://, Tune and Train write
<storage-path>/<name>/ray/ and ``push_study`` uploads the rest when the study ends. Token
authentication stays on: requests carry the token from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or
~/.ray/auth_token, where Ray itself looks.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import yaml

from study.ray_env import RAY_ENV

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PORT = 8265  # the dashboard and Jobs API port on the head node (Ray's default)
#: Object stores the storage path may live in; anything else must be a path.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")
#: Keys a cluster.yaml must have (Ray's schema itself requires only the first two).
REQUIRED_KEYS = ("cluster_name", "provider", "available_node_types", "head_node_type")
#: Options about this machine, not the study; the job gets its own --name and --gpus.
CLIENT_OPTIONS = ("--cluster", "--address", "--output-dir", "--name", "--gpus")
#: Left out of the job's working directory (uploaded to the cluster's object store).
UPLOAD_EXCLUDES = [".venv", ".git", "runs", "data", "**/__pycache__", ".pytest_cache",
                   ".ruff_cache", "*.pt", "*.npz", "*.db"]
TUNE_DIR = "ray"  # Tune's and Train's state inside a study directory (as for local runs)


class ClusterError(Exception):
    """A cluster file, address, token or storage problem: printed as one line, exit status 2."""



def is_remote(storage_path: str | None) -> bool:
    return "://" in (storage_path or "") and storage_path.split("://")[0] in REMOTE_SCHEMES


def check_storage_path(storage_path: str | None) -> None:
    if storage_path and "://" in storage_path and not is_remote(storage_path):
        raise ClusterError(f"--storage-path {storage_path}: use an s3:// or gs:// URI, or a "
                           f"path (with --shared-fs when every node mounts it)")


def study_root(storage_path: str | None, output_dir: Path) -> Path:
    """Parent of the study directory: a storage path that is a (shared) mount, else output_dir."""
    return Path(storage_path) if storage_path and not is_remote(storage_path) else output_dir


def tune_storage(storage_path: str | None, name: str) -> str | None:
    """Tune's and Train's storage_path for an object-store storage path (None: the default
    <study_dir>/ray)."""
    return f"{storage_path.rstrip('/')}/{name}/{TUNE_DIR}" if is_remote(storage_path) else None


def refuse_node_local(storage_path: str | None, shared_fs: bool, why: str) -> None:
    """On a multi-node cluster (`why` says how we know) results must go to shared storage."""
    if is_remote(storage_path) or (storage_path and shared_fs):
        return
    where = f"--storage-path {storage_path} is node-local" if storage_path else \
        "no --storage-path given"
    raise ClusterError(f"{where}, but {why}: trials on other nodes could not write their "
                       f"checkpoints there; pass --storage-path s3://… / gs://…, or a path "
                       f"every node mounts together with --shared-fs")


def push_study(study_dir: Path, storage_path: str, name: str) -> None:
    """Upload a study directory written on this node to <storage-path>/<name>/."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(f"{storage_path.rstrip('/')}/{name}")
    _copy_tree(pafs.LocalFileSystem(), str(study_dir), fs, root, skip=TUNE_DIR)
    print(f"study directory uploaded to {storage_path.rstrip('/')}/{name}", flush=True)


def pull_study(storage_path: str, name: str, study_dir: Path, skip: str | None = TUNE_DIR) -> bool:
    """Download <storage-path>/<name>/ into study_dir (Tune's state stays remote unless
    skip=None); False when there is nothing there."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(f"{storage_path.rstrip('/')}/{name}")
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return False
    _copy_tree(fs, root, pafs.LocalFileSystem(), str(study_dir), skip=skip)
    return True


def _copy_tree(src_fs, src: str, dst_fs, dst: str, skip: str | None) -> None:
    import pyarrow.fs as pafs

    for info in src_fs.get_file_info(pafs.FileSelector(src, recursive=True)):
        rel = info.path[len(src.rstrip("/")) + 1:]
        if info.type != pafs.FileType.File or (skip and rel.split("/")[0] == skip):
            continue
        dst_fs.create_dir(f"{dst}/{rel}".rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(info.path, f"{dst}/{rel}", source_filesystem=src_fs,
                        destination_filesystem=dst_fs)



def load_cluster_config(path: Path) -> dict:
    """cluster.yaml, checked against Ray's cluster-config schema (ClusterError, one line)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    if not path.is_file():
        raise ClusterError(f"--cluster {path}: no such file")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ClusterError(f"--cluster {path}: not valid YAML" + (
            f" (line {mark.line + 1}: {e.problem})" if mark else "")) from None
    if not isinstance(config, dict):
        raise ClusterError(f"--cluster {path}: not a Ray cluster config (expected a mapping with "
                           f"{', '.join(REQUIRED_KEYS)})")
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ClusterError(f"--cluster {path}: missing {', '.join(missing)}")
    quiet = logging.getLogger("ray.autoscaler")  # its INFO lines would break the one-line error
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except jsonschema.ValidationError as e:
        where = ".".join(map(str, e.absolute_path)) or "top level"
        raise ClusterError(f"--cluster {path}: {where}: {e.message}") from None
    except (ValueError, KeyError, TypeError, NotImplementedError) as e:
        raise ClusterError(f"--cluster {path}: {_one_line(e)}") from None
    finally:
        quiet.setLevel(level)
    return config


def max_gpus(config: dict) -> int:
    """GPUs the autoscaler may bring up: worker types' max_workers × their GPUs."""
    cap = config.get("max_workers", 2)
    return sum(min(t.get("max_workers", cap), cap) * int(t.get("resources", {}).get("GPU", 0))
               for name, t in config["available_node_types"].items()
               if name != config["head_node_type"])


def allows_workers(config: dict) -> bool:
    return config.get("max_workers", 2) > 0 and any(
        t.get("max_workers", 1) > 0 for name, t in config["available_node_types"].items()
        if name != config["head_node_type"])



def is_jobs_url(address: str | None) -> bool:
    return bool(address) and address.startswith(("http://", "https://"))


def auth_headers() -> dict:
    """The Authorization header for the cluster's token, if this machine has one."""
    token = os.environ.get("RAY_AUTH_TOKEN")
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        token = path.read_text().strip() if path.is_file() else None
    return {"Authorization": f"Bearer {token}"} if token else {}


def api_get(url: str, endpoint: str, **params) -> dict:
    """GET a dashboard endpoint; unreachable addresses and refused tokens become ClusterError."""
    try:
        r = requests.get(url + endpoint, headers=auth_headers(), params=params, timeout=30)
    except requests.RequestException:
        raise ClusterError(f"cannot reach the Ray dashboard at {url}: is the cluster up and the "
                           f"address right?") from None
    if r.status_code == 401:
        raise ClusterError(f"{url} requires a token (HTTP 401) and none was found here: copy the "
                           f"cluster's ~/.ray/auth_token (`ray get-auth-token` on the head node) "
                           f"to ~/.ray/auth_token, or set RAY_AUTH_TOKEN")
    if r.status_code == 403:
        raise ClusterError(f"{url} refused the token (HTTP 403): it is not this cluster's; use "
                           f"the head node's ~/.ray/auth_token (`ray get-auth-token` there)")
    r.raise_for_status()
    return r.json()


def alive_nodes(url: str) -> list[dict]:
    """The cluster's alive nodes, from the dashboard's state API (GET /api/v0/nodes)."""
    data = api_get(url, "/api/v0/nodes", limit=1000)["data"]["result"]["result"]
    return [n for n in data if n["state"] == "ALIVE"]


def job_argv(argv: list[str], name: str, gpus: int | None) -> list[str]:
    """The study options for the job: argv without this machine's options, plus --name/--gpus."""
    out, skip_value = [], False
    for a in argv:
        if skip_value:
            skip_value = False
        elif a.split("=", 1)[0] in CLIENT_OPTIONS:
            skip_value = "=" not in a
        else:
            out.append(a)
    return out + ["--name", name] + (["--gpus", str(gpus)] if gpus else [])


def submit(argv: list[str], *, name: str, output_dir: Path, storage_path: str | None,
           shared_fs: bool = False, config: dict | None = None, address: str | None = None,
           gpus: int | None = None) -> int:
    """Run the study as a Ray Job on the cluster `config` describes (brought up or reused) or at
    the Jobs API `address`; stream it; fetch the study directory. Returns the exit status."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    if not storage_path:
        raise ClusterError("--storage-path is required with --cluster/--address: the study "
                           "directory is written there and fetched from there")
    check_storage_path(storage_path)
    if config is not None:
        if allows_workers(config):
            refuse_node_local(storage_path, shared_fs, "cluster.yaml allows worker nodes")
        gpus = gpus or max_gpus(config)
    with _dashboard(config, address) as url:
        nodes = alive_nodes(url)  # also checks the address and the token
        if len(nodes) > 1:
            refuse_node_local(storage_path, shared_fs, f"{url} has {len(nodes)} nodes")
        gpus = gpus or int(sum(n.get("resources_total", {}).get("GPU", 0) for n in nodes))
        client = JobSubmissionClient(url, headers=auth_headers())
        entrypoint = shlex.join(["python", "study/run.py", *job_argv(argv, name, gpus)])
        job_id = client.submit_job(
            entrypoint=entrypoint, submission_id=f"study-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            runtime_env={"working_dir": str(ROOT), "excludes": UPLOAD_EXCLUDES,
                         "env_vars": {"PYTHONUNBUFFERED": "1",  # logs stream as they come
                                      **RAY_ENV}},
            metadata={"study": name, "storage_path": storage_path})
        print(f"submitted job {job_id}: {entrypoint}\n  status: {url}/#/jobs/{job_id}", flush=True)
        try:
            status = follow(client, job_id)
        except KeyboardInterrupt:
            print(f"\ndetached; job {job_id} keeps running. Stop it with: ray job stop "
                  f"--address {url} {job_id}", file=sys.stderr)
            return 130
        if status != JobStatus.SUCCEEDED:
            print(f"job {job_id} {status.value}: {client.get_job_info(job_id).message}",
                  file=sys.stderr)
        fetch_study(storage_path, name, output_dir, config)
    return 0 if status == JobStatus.SUCCEEDED else 1


def follow(client, job_id: str, poll_s: float = 2.0):
    """Stream the job's logs and print its status transitions until it ends; its final status."""

    async def logs():
        async for chunk in client.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    async def status():
        last = None
        while True:
            now = await asyncio.to_thread(client.get_job_status, job_id)
            if now != last:
                print(f"[job {job_id}] {now.value}", flush=True)
                last = now
            if now.is_terminal():
                return now
            await asyncio.sleep(poll_s)

    async def both():
        tail = asyncio.create_task(logs())
        final = await status()
        try:  # the last lines arrive shortly after the job ends
            await asyncio.wait_for(tail, timeout=30)
        except Exception:  # a broken log stream must not hide the job's status
            tail.cancel()
        return final

    return asyncio.run(both())


def fetch_study(storage_path: str, name: str, output_dir: Path, config: dict | None) -> None:
    """Copy <storage-path>/<name>/ to <output-dir>/<name>/ on this machine."""
    dest = output_dir.resolve() / name
    if is_remote(storage_path):
        if not pull_study(storage_path, name, dest, skip=None):
            print(f"no study directory at {storage_path}/{name}", file=sys.stderr)
            return
    else:
        src = Path(storage_path).resolve() / name
        if src.is_dir():  # a mount this machine shares (nothing to do if it is dest itself)
            if src != dest:
                shutil.copytree(src, dest, dirs_exist_ok=True)
        elif config is not None:  # on the head node: rsync over SSH
            from ray.autoscaler import sdk

            dest.mkdir(parents=True, exist_ok=True)
            sdk.rsync(_with_project_paths(config), source=f"{src}/", target=f"{dest}/",
                      down=True)
        else:
            print(f"the study directory is {src} on the cluster (not mounted here)")
            return
    print(f"study directory: {dest}", flush=True)


@contextmanager
def _dashboard(config: dict | None, address: str | None) -> Iterator[str]:
    """The Jobs/dashboard URL: `address`, or the launched cluster's dashboard forwarded to
    127.0.0.1 through SSH (`ray dashboard`) for as long as the context lasts."""
    if config is None:
        yield address.rstrip("/")
        return
    from ray.autoscaler import sdk

    if config["provider"]["type"] == "aws" and importlib.util.find_spec("boto3") is None:
        raise ClusterError("--cluster with an AWS cluster.yaml needs boto3 on this machine: "
                           "pip install boto3 (and AWS credentials, e.g. `aws configure`)")
    config = _with_project_paths(config)
    _ensure_token()
    try:
        sdk.create_or_update_cluster(config)  # brings it up, or reuses it as it is
        head = sdk.get_head_node_ip(config)
    except Exception as e:  # provider errors come in many types; the launcher logged details
        raise ClusterError(f"could not bring up cluster {config['cluster_name']}: "
                           f"{_one_line(e)}") from None
    port = _free_port(DASHBOARD_PORT)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="cluster-") as f:
        yaml.safe_dump(config, f)
        f.flush()
        tunnel = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "dashboard", f.name, "--port",
             str(port), "--remote-port", str(DASHBOARD_PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, tunnel)
            print(f"cluster {config['cluster_name']}: head node {head}; Ray dashboard (SSH "
                  f"tunnel): {url}", flush=True)
            yield url
        finally:  # the tunnel's ssh runs in its own process group: end both
            os.killpg(tunnel.pid, signal.SIGTERM)
            tunnel.wait(timeout=30)


def _with_project_paths(config: dict) -> dict:
    """file_mounts' local paths are relative to the project root, wherever we run from."""
    config = copy.deepcopy(config)
    config["file_mounts"] = {remote: str((ROOT / Path(local).expanduser()).resolve())
                             for remote, local in config.get("file_mounts", {}).items()}
    return config


def _ensure_token() -> None:
    """cluster.yaml mounts ~/.ray/auth_token on every node: create it once if missing."""
    if not (Path.home() / ".ray" / "auth_token").is_file():
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token",
                        "--generate"], check=True, capture_output=True)


def _wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"the SSH tunnel to the dashboard ended (exit {proc.returncode}); "
                               f"try `ray dashboard` with the cluster file to see why")
        try:
            requests.get(url + "/api/healthz", timeout=5)
            return
        except requests.RequestException:
            time.sleep(1)
    raise ClusterError(f"the dashboard did not answer at {url} within {timeout_s:.0f} s")


def _free_port(preferred: int) -> int:
    """`preferred` if it is free on 127.0.0.1, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_line(e: BaseException) -> str:
    lines = [s for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]
