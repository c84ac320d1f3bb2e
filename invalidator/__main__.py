import sys

from invalidator.commands.cli import main

sys.exit(main())
