"""User errors: one clear line, exit code 2, no traceback. Program bugs still show their traceback."""
import sys


class UserError(Exception):
    """Bad input from the user: a file, a line, a config key. The message says what was expected."""


def run_main(main):
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
