import sys

from sigcell.cli import main

sys.exit(main())
