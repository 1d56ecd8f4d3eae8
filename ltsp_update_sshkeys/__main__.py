"""python3 -m ltsp_update_sshkeys: the same as the ltsp-update-sshkeys command."""

import sys

from ltsp_update_sshkeys.cli import main

sys.exit(main())
