"""The cluster launcher side of ``--cluster cluster.yaml``: check the cluster file, bring the
cluster up (or reuse it) with Ray's cluster-launcher SDK, and reach its dashboard through an
SSH tunnel on 127.0.0.1. Submitting the study there is study/jobs.py's; where its files go,
study/storage.py's.

Everything that touches the cloud goes through a ``Launcher`` (Ray's SDK and CLI); tests pass
a fake one to check the bring-up sequence and its failures without a cloud.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import re
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

from study.errors import ClusterError
from trainables.errors import one_line

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PORT = 8265  # the dashboard and Jobs API port on the head node (Ray's default)
#: Keys a cluster.yaml must have (Ray's schema itself requires only the first two).
REQUIRED_KEYS = ("cluster_name", "provider", "available_node_types", "head_node_type")
TUNNEL_TIMEOUT_S = 120  # how long the forwarded dashboard may take to answer
CLUSTER_YAML_BYTES = 1024**2  # a cluster file is a few kB


def load_cluster_config(path: Path) -> dict:
    """cluster.yaml, checked against Ray's cluster-config schema (ClusterError, one line)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    from study.checks import read_bounded

    if not path.is_file():
        raise ClusterError(f"--cluster {path}: no such file")
    try:
        config = yaml.safe_load(read_bounded(path, CLUSTER_YAML_BYTES, "--cluster")
                                .decode("utf-8", "replace"))
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
        raise ClusterError(f"--cluster {path}: {one_line(e, 300)}") from None
    finally:
        quiet.setLevel(level)
    check_gpu_types(config, path)
    return config


#: Instance types that have GPUs: AWS P and G families (p3, p4d, p5, g4dn, g5, g6, gr6, ...),
#: GCP's accelerator-optimised machines (a2, a3, g2) and Azure's N series (NC, ND, NV).
GPU_INSTANCE_TYPES = re.compile(r"(?:(?:p|g|gr)\d[a-z0-9-]*\.\w+|(?:a2|a3|g2)-\w[\w-]*|"
                                r"Standard_N[CDGV]\w*)", re.IGNORECASE)


def check_gpu_types(config: dict, path: Path) -> None:
    """Every worker type on a GPU instance declares its GPUs (``resources: {GPU: n}``): the
    autoscaler brings up only node types that say they have what a trial asks for, and the
    study plans for the GPUs declared (max_gpus), so a missing line runs the study on CPU."""
    for name, t in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue  # the head's GPUs are found by `ray start` on it
        node = t.get("node_config") or {}
        kind = (node.get("InstanceType") or node.get("machineType") or node.get("vmSize")
                or (node.get("azure_arm_parameters") or {}).get("vmSize") or "")
        gpus = bool(node.get("guestAccelerators")) or bool(GPU_INSTANCE_TYPES.fullmatch(
            str(kind)))
        if gpus and "GPU" not in (t.get("resources") or {}):
            raise ClusterError(f"--cluster {path}: node type {name} ({kind or 'accelerators'}) "
                               f"has GPUs but no 'GPU' in its resources, so the study would "
                               f"run on CPU: add e.g. 'resources: {{CPU: 4, GPU: 1}}' to it")


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


class Launcher:
    """Ray's cluster launcher: the SDK for the cluster, its CLI for the dashboard tunnel."""

    def up(self, config: dict) -> str:
        """Bring the cluster up, or reuse it as it is; the head node's address."""
        from ray.autoscaler import sdk

        sdk.create_or_update_cluster(config)
        return sdk.get_head_node_ip(config)

    def tunnel(self, config_file: str, port: int) -> subprocess.Popen:
        """`ray dashboard`: the head's dashboard forwarded to 127.0.0.1:`port` over SSH."""
        return subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "dashboard", config_file, "--port",
             str(port), "--remote-port", str(DASHBOARD_PORT)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)

    def rsync_down(self, config: dict, source: str, target: str) -> None:
        from ray.autoscaler import sdk

        sdk.rsync(config, source=source, target=target, down=True)

    def ensure_token(self) -> None:
        """cluster.yaml mounts ~/.ray/auth_token on every node: create it once if missing,
        readable by its owner only (study/auth_token.py)."""
        from study.auth_token import ensure_token

        ensure_token()


@contextmanager
def dashboard(config: dict, launcher: Launcher) -> Iterator[str]:
    """Bring the cluster `config` describes up and yield its dashboard URL, forwarded to
    127.0.0.1 through SSH for as long as the context lasts."""
    if config["provider"]["type"] == "aws" and importlib.util.find_spec("boto3") is None:
        raise ClusterError("--cluster with an AWS cluster.yaml needs boto3 on this machine: "
                           "pip install boto3 (and AWS credentials, e.g. `aws configure`)")
    config = with_project_paths(config)
    try:
        launcher.ensure_token()
    except OSError as e:
        raise ClusterError(f"cannot create the cluster's token file ({one_line(e, 200)}): "
                           f"check ~/.ray is writable") from None
    try:
        head = launcher.up(config)
    except Exception as e:  # provider errors come in many types; the launcher logged details
        raise ClusterError(f"could not bring up cluster {config['cluster_name']}: "
                           f"{one_line(e, 300)}") from None
    port = _free_port(DASHBOARD_PORT)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="cluster-") as f:
        yaml.safe_dump(config, f)
        f.flush()
        try:
            tunnel = launcher.tunnel(f.name, port)
        except OSError as e:
            raise ClusterError(f"cannot start the SSH tunnel to the dashboard "
                               f"({one_line(e, 200)})") from None
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(url, tunnel)
            print(f"cluster {config['cluster_name']}: head node {head}; Ray dashboard (SSH "
                  f"tunnel): {url}", flush=True)
            yield url
        finally:  # the tunnel's ssh runs in its own process group: end both
            _end(tunnel)


def with_project_paths(config: dict) -> dict:
    """file_mounts' local paths are relative to the project root, wherever we run from."""
    config = copy.deepcopy(config)
    config["file_mounts"] = {remote: str((ROOT / Path(local).expanduser()).resolve())
                             for remote, local in config.get("file_mounts", {}).items()}
    return config


def _end(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:  # already gone
        pass
    proc.wait(timeout=30)


def _wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float = TUNNEL_TIMEOUT_S) -> None:
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
