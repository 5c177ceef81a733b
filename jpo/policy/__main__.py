"""`python -m jpo.policy reseal FOLDER`: re-seal an artifact after editing its manifest."""

import sys

from jpo.policy.artifact import reseal_artifact

if len(sys.argv) != 3 or sys.argv[1] != "reseal":
    sys.exit("usage: python -m jpo.policy reseal ARTIFACT_FOLDER")
print(f"re-sealed {reseal_artifact(sys.argv[2])}")
