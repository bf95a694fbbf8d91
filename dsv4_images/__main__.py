"""`python -m dsv4_images ...` is `dsv4-images ...`."""

import sys

from .cli import main

sys.exit(main())
