"""``python -m gpt_core.train``: see :mod:`gpt_core.train.cli`."""
import sys

from gpt_core.train.cli import main

sys.exit(main())
