"""`python -m cli ...` is the `avpenet` command."""

import sys

from cli.main import main

sys.exit(main())
