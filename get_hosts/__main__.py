"""python3 -m get_hosts: the same as the get_hosts command."""

import sys

from get_hosts.cli import main

sys.exit(main())
