"""`python -m jpo.train`: train the SAC policy (see jpo.train.trainer)."""

import sys

from jpo.train.command import main

sys.exit(main())
