"""`python -m gnnmd.cli ...` (and `torchrun -m gnnmd.cli ...`): the same as the `gnnmd` command."""

import sys

from gnnmd.cli import main

sys.exit(main())
