"""``python -m localvmss.lab``: the lab's commands (up, down, gc, and _host-init for libvirtd)."""

import sys

from localvmss.lab.hosts import main

sys.exit(main())
