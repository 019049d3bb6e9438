"""Errors the user can act on, and the CLI wrapper that prints them as one line.

Exit codes, the same for every command of the kit:
    0    done
    2    bad input (`UserError`): a missing or corrupt file, a bad setting, a name that escapes its folder
    3    training diverged (`Diverged`): the loss turned NaN or infinite
    4    a write failed (`WriteFailed`): the disk is full, a file grew past its limit, an I/O error
    5    a loader delivered other samples than its epoch's order (`WrongSamples`): a defect, not a result
    130  interrupted by SIGINT or SIGTERM (train.py says which checkpoint to resume from)
Anything else is a bug and keeps its traceback.
"""
import contextlib
import errno
import functools
import os
import signal
import sys

INTERRUPTED = 130


class UserError(Exception):
    """Bad input: a missing or corrupt file, a bad config value, no network..."""
    exit_code = 2


class Diverged(UserError):
    """The training loss turned NaN or infinite."""
    exit_code = 3


class WriteFailed(UserError):
    """A file could not be written for a reason outside the program: a full disk, a size limit, I/O."""
    exit_code = 4


class WrongSamples(UserError):
    """An epoch's batches were not the samples its order names: too many, too few, or other ones."""
    exit_code = 5


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: the command stops, saying what it leaves behind."""


@contextlib.contextmanager
def interruptible():
    """Turn SIGINT and SIGTERM into `Interrupted` while the block runs, then restore the old handlers."""
    def stop(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# The errors that say the storage, not the program, failed a write.
STORAGE_ERRORS = {errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EROFS}


def storage_failure(error, path):
    """`WriteFailed` naming `path` and the cause, if `error` is a storage error; else None."""
    if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
        return WriteFailed(f"cannot write {path}: {os.strerror(error.errno)}")
    return None


def exit_on_user_error(main):
    """Decorate a CLI entry point: a `UserError` ends it with one line and its exit code; SIGINT or SIGTERM
    with one line and INTERRUPTED, once the `finally` blocks on the way out have removed its temporaries
    and stopped its child processes. A command says what it keeps by raising `Interrupted("SIGINT: ...")`."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            with interruptible():
                return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(error.exit_code)
        except Interrupted as stop:
            print(f"stopped by {stop}", file=sys.stderr)
            sys.exit(INTERRUPTED)

    return wrapper
