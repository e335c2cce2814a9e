"""`python -m edge_lls.cli ...` is `edge-lls ...`."""
import sys

from . import main

sys.exit(main())
