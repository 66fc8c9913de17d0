import sys

from sbts.cli.main import main

sys.exit(main())
