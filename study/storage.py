"""Where a study's files live when it runs on more than one machine.

A storage path (``--storage-path``) is an object store (s3://, gs://, ...) or a path; on a
multi-node cluster it must be one every node reaches (an object store, or a mount passed with
``--shared-fs``). With an object store, Tune and Train write ``<storage-path>/<name>/ray/``
directly, and ``push_study`` uploads the rest of the study directory from the head node.
"""

from __future__ import annotations

from pathlib import Path

from study.errors import ClusterError

#: Object stores the storage path may live in; anything else must be a path.
REMOTE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")
TUNE_DIR = "ray"  # Tune's and Train's state inside a study directory (as for local runs)


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
        if info.type != pafs.FileType.File or (skip and rel.split("/")[0] == skip) \
                or _private(rel):
            continue
        dst_fs.create_dir(f"{dst}/{rel}".rsplit("/", 1)[0], recursive=True)
        pafs.copy_files(info.path, f"{dst}/{rel}", source_filesystem=src_fs,
                        destination_filesystem=dst_fs)


def _private(rel: str) -> bool:
    """This node's own files in a study directory: the driver's lock (study/lock.py) and the
    temporary files of atomic writes."""
    return rel == ".lock" or (rel.startswith(".") and rel.endswith(".tmp"))
