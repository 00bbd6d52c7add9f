"""One writer per run directory: an exclusive flock on DIR/.lock, released when the process dies."""
import fcntl
import os

from gan.errors import UserFacingError


class WorkdirLockedError(UserFacingError, RuntimeError):
    """Another live process holds the run directory."""


class WorkdirLock:
    def __init__(self, workdir):
        self.path = os.path.join(workdir, ".lock")
        self._file = None

    def __enter__(self):
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            owner = self._file.read().strip() or "unknown"
            self._file.close()
            raise WorkdirLockedError(
                f"{os.path.dirname(self.path)} is being written by another process (pid {owner}). "
                "Wait for it to finish or stop it, or use another --workdir.") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
