import os
import sys

from sbts.cli.main import main

if os.environ.get("RANK", "0") != "0":  # torchrun -m sbts: rank 0 alone prints results (errors stay on stderr)
    sys.stdout = open(os.devnull, "w")
sys.exit(main())
