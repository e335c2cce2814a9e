"""`python -m edge_lls ...` is `edge-lls ...`."""
import sys

from .cli import main

sys.exit(main())
