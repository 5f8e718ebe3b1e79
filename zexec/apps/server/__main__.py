"""``python -m zexec.apps.server``: run a per-user server configured by ZEXEC_SERVER_*."""

import sys

from zexec.apps.server.app import main

if __name__ == "__main__":
    sys.exit(main())
