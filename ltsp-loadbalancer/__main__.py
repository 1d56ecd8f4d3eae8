import sys

from ltsp_loadbalancer.cli import main

sys.exit(main())
