"""The errors a user can fix: bad config, bad data, bad checkpoint, diverged run.

`gan.main` prints these as one clear message (no traceback) and exits with status 2.
"""


class UserFacingError(Exception):
    """An error whose message names the problem and the fix."""
