"""FFCV's DatasetWriter with supervised workers.

FFCV's DatasetWriter forks worker processes and waits, polling a counter, until
they have written every sample: a worker that dies (a full disk, say) leaves it
waiting forever, and killing the writer leaves the workers running. Its workers
are built through `ffcv.writer.Process`; for the length of one write, that name
gives ours, which die with the writer and report their error, and a watchdog
thread stops the writer as soon as one of them fails.
"""
import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
from multiprocessing import shared_memory

import ffcv.writer
from tqdm import tqdm

from fast_cifar.errors import WriteFailed


class _WorkerFailed(Exception):
    pass


class _Worker(multiprocessing.Process):
    def __init__(self, errors, *args, **kwargs):
        super().__init__(*args, daemon=True, **kwargs)  # daemonic: ended when the writer exits
        self.errors, self.writer_pid = errors, os.getpid()

    def run(self):
        _die_with_parent(self.writer_pid)
        try:
            super().run()
        except BaseException as error:
            self.errors.put(f"{type(error).__name__}: {error}")
            os._exit(1)


def _die_with_parent(parent_pid):
    """Ask Linux to SIGKILL this process when its parent dies, even by kill -9."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the request took hold
        os._exit(1)


@contextlib.contextmanager
def supervised_workers(what):
    """Within the block, FFCV's writer workers die with this process and a failed one ends the write."""
    workers, errors = [], multiprocessing.SimpleQueue()
    stop_watching = threading.Event()  # set once the write is over, failed or not

    def make_worker(*args, **kwargs):
        workers.append(_Worker(errors, *args, **kwargs))
        return workers[-1]

    def watch(main_thread):
        while not stop_watching.wait(0.2):
            if any(worker.exitcode not in (None, 0) for worker in list(workers)):
                signal.pthread_kill(main_thread, signal.SIGUSR1)  # interrupts even a blocking read
                return

    def on_failure(signum, frame):
        if not stop_watching.is_set():  # a late signal after the write is over is ignored
            raise _WorkerFailed

    previous_handler = signal.signal(signal.SIGUSR1, on_failure)
    watchdog = threading.Thread(target=watch, args=(threading.main_thread().ident,), daemon=True)
    ffcv.writer.Process = make_worker
    watchdog.start()
    try:
        yield
    except _WorkerFailed:
        for bar in list(tqdm._instances):  # FFCV's progress bar, left open: close it before the error line
            bar.close()
        reason = errors.get() if not errors.empty() else "it exited without a word"
        raise WriteFailed(f"writing {what} failed in a writer process ({reason})") from None
    finally:
        stop_watching.set()
        watchdog.join()
        ffcv.writer.Process = multiprocessing.Process
        for worker in workers:
            if worker.is_alive():
                worker.kill()
                worker.join()
        signal.signal(signal.SIGUSR1, previous_handler)


def release_shared_memory(writer):
    """FFCV unlinks its metadata segment only after a successful write; do it on failure too."""
    memory = getattr(writer, "metadata_sm", None)
    if isinstance(memory, shared_memory.SharedMemory):
        with contextlib.suppress(FileNotFoundError):
            memory.close()
            memory.unlink()
