"""One writer per run directory: an exclusive flock on DIR/.lock, released when the process dies.

With several processes on one run (gan.distributed), process 0 takes the lock for all of them
and they all learn whether it got it, so either all start or all stop.
"""
import fcntl
import os

from gan import distributed
from gan.errors import UserFacingError


class WorkdirLockedError(UserFacingError, RuntimeError):
    """Another live process holds the run directory."""


class WorkdirLock:
    def __init__(self, workdir):
        self.path = os.path.join(workdir, ".lock")
        self._file = None

    def __enter__(self):
        error = self._lock() if distributed.is_writer() else None
        if distributed.any_process(error is not None):
            raise error or WorkdirLockedError(
                f"{os.path.dirname(self.path)} is being written by another run (process 0 of "
                "this one found it locked).")
        return self

    def _lock(self):
        """None once locked, else the error naming the holder."""
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            owner = self._file.read().strip() or "unknown"
            self._file.close()
            self._file = None
            return WorkdirLockedError(
                f"{os.path.dirname(self.path)} is being written by another process (pid {owner}). "
                "Wait for it to finish or stop it, or use another --workdir.")
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return None

    def __exit__(self, *exc):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
