"""Exceptions a script sees. Messages are lagerd's own error text, errno
wording included (diagnose.md section 6), so what a script prints is what
`lager supply` would print."""


class LagerError(Exception):
    """Base of every error the package raises. `status` is lagerd's HTTP
    status when the error came from lagerd."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class InvalidNetError(LagerError):
    """No saved net has that name; the message lists the saved nets."""


class RoleMismatchError(LagerError):
    """The net exists with another role (a battery asked for as a supply)."""


class InstrumentError(LagerError):
    """The instrument failed or refused: `errno` is 16 (busy), 19 (gone) or
    110 (timed out) when lagerd's text names one, else None."""

    def __init__(self, message, status=None, errno=None):
        super().__init__(message, status)
        self.errno = errno


class LimitError(LagerError, ValueError):
    """A value outside the instrument's (or channel's) range: refused before
    anything reached the instrument (instruments.md section 10.3)."""


class LockedError(LagerError):
    """With --enforce-locks, someone else holds the box (HTTP 423)."""


def errno_of(text):
    """The N of the first `[Errno N]` in text, else None."""
    start = text.find("[Errno ")
    if start < 0:
        return None
    digits = text[start + 7:].split("]", 1)[0]
    return int(digits) if digits.isdigit() else None


def from_reply(status, body):
    """The exception for one failed lagerd answer (`body` a dict)."""
    message = body.get("error") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message:
        message = "lagerd answered HTTP %d without an error text" % status
    if status == 423:
        return LockedError(message, status)
    if status == 401:
        return LagerError(
            message + ": this job has no valid token for lagerd (LAGER_JOB_TOKEN_FILE)",
            status,
        )
    if status == 404 and "not found" in message:
        return InvalidNetError(message, status)
    if status == 400 and "' net, not '" in message:
        return RoleMismatchError(message, status)
    if status == 400 and ("outside the instrument's range" in message
                          or "Cannot set OVP" in message
                          or "the output would trip" in message):
        return LimitError(message, status)
    if status == 400:
        return LagerError(message, status)
    # 502 (the instrument), 504 (wedged), and the cross-role conflict that
    # lagerd answers with 200 and success false (instruments.md section 7).
    return InstrumentError(message, status, errno_of(message))
