"""``python -m zexec.apps.broker``: run the broker configured by ZEXEC_BROKER_* / ZEXEC_AUTH_*."""

import sys

from zexec.apps.broker.app import main

if __name__ == "__main__":
    sys.exit(main())
