"""``python -m zexec.apps.cli``: the ``zexec`` command without the console script."""

import sys

from zexec.apps.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
