"""User errors: one clear line, exit code 2, no traceback. Program bugs still show their traceback."""
import errno
import signal
import sys

# a write that cannot be made for want of room: a full disk, a quota, a file-size limit (ulimit -f)
NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


class UserError(Exception):
    """Bad input from the user: a file, a line, a config key. The message says what was expected."""


def run_main(main):
    """Run a script's main: a UserError, or a write that found no room, is one 'error: ...' line and exit code 2;
    Ctrl-C is 'interrupted' and 130."""
    if hasattr(signal, "SIGXFSZ"):  # past a file-size limit, a write fails with EFBIG instead of killing us
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if e.errno not in NO_ROOM:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}could not write ({e.strerror}); free some space or raise the limit, then run again",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
