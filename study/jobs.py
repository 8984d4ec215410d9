"""Run the study on a Ray cluster as a Ray Job, and bring its results home.

    python study/run.py --cluster cluster.yaml --storage-path s3://my-bucket/runs --preset gpu
    python study/run.py --address http://127.0.0.1:8265 --storage-path /mnt/nfs/runs --shared-fs

``submit``: bring the cluster up from cluster.yaml (study/cluster.py) or attach to
``--address``; submit ``study/run.py`` with the same study options as a Ray Job; stream its
logs and status; fetch <storage-path>/<name>/ into --output-dir. On the head node the job is
an ordinary study whose directory is on the storage path (study/storage.py). Token
authentication stays on: requests carry the token from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH
or ~/.ray/auth_token, where Ray itself looks.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import requests

from study import redact, storage
from study.cluster import Launcher, allows_workers, dashboard, max_gpus, with_project_paths
from study.errors import ClusterError
from study.ray_env import RAY_ENV
from trainables.errors import one_line

ROOT = Path(__file__).resolve().parent.parent
#: Options about this machine, not the study; the job gets its own --name and --gpus.
CLIENT_OPTIONS = ("--cluster", "--address", "--output-dir", "--name", "--gpus")
#: Left out of the job's working directory (uploaded to the cluster's object store).
UPLOAD_EXCLUDES = [".venv", ".git", "runs", "data", "**/__pycache__", ".pytest_cache",
                   ".ruff_cache", "*.pt", "*.npz", "*.db"]
API_TIMEOUT_S = 30
LOG_TAIL_S = 30  # how long the last log lines may take to arrive after the job ends


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
        r = requests.get(url + endpoint, headers=auth_headers(), params=params,
                         timeout=API_TIMEOUT_S)
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
           gpus: int | None = None, launcher: Launcher | None = None,
           client_factory=None) -> int:
    """Run the study as a Ray Job on the cluster `config` describes (brought up or reused) or at
    the Jobs API `address`; stream it; fetch the study directory. Returns the exit status.
    `launcher` and `client_factory` (JobSubmissionClient) are Ray's unless a test passes fakes."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    launcher = launcher or Launcher()
    client_factory = client_factory or JobSubmissionClient
    if not storage_path:
        raise ClusterError("--storage-path is required with --cluster/--address: the study "
                           "directory is written there and fetched from there")
    storage.check_storage_path(storage_path)
    if config is not None:
        if allows_workers(config):
            storage.refuse_node_local(storage_path, shared_fs, "cluster.yaml allows worker nodes")
        gpus = gpus or max_gpus(config)
    reach = dashboard(config, launcher) if config is not None else \
        nullcontext(address.rstrip("/"))
    with reach as url:
        nodes = alive_nodes(url)  # also checks the address and the token
        if len(nodes) > 1:
            storage.refuse_node_local(storage_path, shared_fs, f"{url} has {len(nodes)} nodes")
        gpus = gpus or int(sum(n.get("resources_total", {}).get("GPU", 0) for n in nodes))
        study_argv, secret_env = without_secrets(job_argv(argv, name, gpus))
        entrypoint = shlex.join(["python", "study/run.py", *study_argv])
        try:
            client = client_factory(url, headers=auth_headers())
            job_id = client.submit_job(
                entrypoint=entrypoint,
                submission_id=f"study-{name}-{time.strftime('%Y%m%d-%H%M%S')}",
                runtime_env={"working_dir": str(ROOT), "excludes": UPLOAD_EXCLUDES,
                             "env_vars": {"PYTHONUNBUFFERED": "1",  # logs stream as they come
                                          **RAY_ENV, **secret_env}},
                metadata={"study": name, "storage_path": storage_path})
        except Exception as e:  # the Jobs API's errors are RuntimeErrors with the HTTP reply
            raise ClusterError(f"could not submit the study job to {url}: "
                               f"{one_line(e, 300)}") from None
        print(f"submitted job {job_id}: {entrypoint}\n  status: {url}/#/jobs/{job_id}", flush=True)
        try:
            status = follow(client, job_id)
        except KeyboardInterrupt:
            print(f"\ndetached; job {job_id} keeps running. Stop it with: ray job stop "
                  f"--address {url} {job_id}", file=sys.stderr)
            return 130
        except Exception as e:
            raise ClusterError(f"lost the job's status at {url} ({one_line(e, 200)}); job "
                               f"{job_id} may still run: `ray job status --address {url} "
                               f"{job_id}`") from None
        if status != JobStatus.SUCCEEDED:
            try:
                why = client.get_job_info(job_id).message
            except Exception as e:
                why = f"(no details: {one_line(e, 200)})"
            print(f"job {job_id} {status.value}: {why}", file=sys.stderr)
        try:
            fetch_study(storage_path, name, output_dir, config, launcher)
        except Exception as e:
            print(f"error: could not fetch the study directory from "
                  f"{storage_path.rstrip('/')}/{name} ({one_line(e, 200)}); it stays there: "
                  f"fetch it by hand, or resume with --resume --name {name}", file=sys.stderr)
            return 1
    return 0 if status == JobStatus.SUCCEEDED else 1


def without_secrets(argv: list[str]) -> tuple[list[str], dict]:
    """The job's options with --storage's password taken out, and the environment that gives
    it back to the job (study/redact.py): a Ray Job's command line is kept by the dashboard,
    printed, and visible to every user of the head node (ps)."""
    out, env, value_of = [], {}, None
    for a in argv:
        if value_of is not None or a.startswith("--storage="):
            url = a if value_of is not None else a.split("=", 1)[1]
            if redact.password(url) is not None:
                env[redact.PASSWORD_ENV] = redact.password(url)
                url = redact.without_password(url)
            out.append(url if value_of is not None else f"--storage={url}")
            value_of = None
        else:
            out.append(a)
            value_of = a if a == "--storage" else None
    return out, env


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
            await asyncio.wait_for(tail, timeout=LOG_TAIL_S)
        except Exception:  # a broken log stream must not hide the job's status
            tail.cancel()
        return final

    return asyncio.run(both())


def fetch_study(storage_path: str, name: str, output_dir: Path, config: dict | None,
                launcher: Launcher) -> None:
    """Copy <storage-path>/<name>/ to <output-dir>/<name>/ on this machine."""
    dest = output_dir.resolve() / name
    if storage.is_remote(storage_path):
        if not storage.pull_study(storage_path, name, dest, skip=None):
            print(f"no study directory at {storage_path}/{name}", file=sys.stderr)
            return
    else:
        src = Path(storage_path).resolve() / name
        if src.is_dir():  # a mount this machine shares (nothing to do if it is dest itself)
            if src != dest:
                shutil.copytree(src, dest, dirs_exist_ok=True)
        elif config is not None:  # on the head node: rsync over SSH
            dest.mkdir(parents=True, exist_ok=True)
            launcher.rsync_down(with_project_paths(config), f"{src}/", f"{dest}/")
        else:
            print(f"the study directory is {src} on the cluster (not mounted here)")
            return
    print(f"study directory: {dest}", flush=True)
