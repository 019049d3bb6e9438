"""Writing files so that a crash never leaves one that looks finished, nor junk that stays."""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import uuid
from pathlib import Path

from fast_cifar.errors import UserError, storage_failure

# .<name>.<pid>-<random>.tmp: the pid tells a later run whether the writer is still alive.
_TEMPORARY = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success rename it to `path`, on failure delete it.

    The rename is atomic on one file system, so readers see the old file or the
    complete new one, never a partial write. A full disk, a file-size limit or an
    I/O error becomes `WriteFailed` naming `path`, and the previous `path` stays as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name, not yet a file: the writer creates it with the usual permissions.
    temporary = path.parent / f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except Exception as error:
        # Libraries wrap the OSError (torch.save raises a RuntimeError whose context is the OSError).
        failure = next(filter(None, (storage_failure(cause, path) for cause in _causes(error))), None)
        if failure:
            raise failure from None
        raise
    finally:
        # Never let the clean-up hide the error that brought us here (a read-only folder, say).
        with contextlib.suppress(OSError):
            os.remove(temporary)


@contextlib.contextmanager
def atomic_file(path):
    """`atomic_path`, opened for writing bytes: for writers such as torch.save, which report a failed
    write with its cause only when they write through a Python file."""
    with atomic_path(path) as temporary, open(temporary, "wb") as file:
        yield file


def _causes(error):
    """The error and those it was raised from or during, innermost last."""
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def remove_stale_temporaries(folder):
    """Delete our temporaries whose writer is gone (killed with -9, or the machine went down)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.glob(".*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match and not _process_alive(int(match[1])):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def inside(parent, name, what):
    """`parent / name` where `name` must be one plain folder or file name: never `..`, a separator or an
    absolute path, so that a name from the user cannot place files outside `parent`."""
    text = str(name)
    if (not text.strip() or text in (".", "..") or "/" in text or "\\" in text or "\0" in text
            or Path(text).is_absolute()):
        raise UserError(f"{what} must be one plain name inside {parent}, without '/', '..' or a leading '/': "
                        f"got {text!r}")
    return Path(parent) / text


def writable_folder(folder, what="output folder"):
    """Create `folder` if needed and check that files can be written there: one line if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write to {what} {folder}: {error.strerror or error}") from None
    return folder


def lock_folder(folder):
    """Hold an exclusive lock on `folder` for as long as the returned file stays open (the process's life).

    The kernel drops the lock when the process ends, however it ends, so a lock
    is never left behind.
    """
    handle = open(Path(folder) / ".lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(f"{folder} is in use by another run (it holds the lock on {folder}/.lock)") from None
    return handle


def write_text(path, text):
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_json(path, content):
    write_text(path, json.dumps(content, indent=2) + "\n")


def sha256(path, chunk_bytes=1 << 22):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
