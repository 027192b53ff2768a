"""The `iptraf-mp` command (and `python -m iptraf_mp`)."""

import sys

from iptraf_mp import StaleBuild


def main() -> int:
    """The command line; a stale compiled core is one line and exit status 2."""
    try:
        from iptraf_mp.app.cli import main as cli_main
    except StaleBuild as err:
        print(err, file=sys.stderr)
        return 2
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
