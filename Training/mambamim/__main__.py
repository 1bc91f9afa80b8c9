import sys

from mambamim.cli import main

sys.exit(main())
