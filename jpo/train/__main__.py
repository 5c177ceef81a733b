"""`python -m jpo.train`: train the SAC policy (see jpo.train.trainer)."""

import sys

from jpo.train.trainer import main

sys.exit(main())
