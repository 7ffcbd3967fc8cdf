"""`python -m study.trial_worker ACCELERATOR`: a follower rank of a sweep worker's trial group.

Started by study/trial_group.py (never by hand): it joins the group its environment describes
(RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and trains its share of each trial the leader sends.
Its console shows warnings only: the leader logs each trial once.
"""

import logging
import sys

from study.cli import _quiet_libraries
from study.trial_group import follow

if __name__ == "__main__":
    _quiet_libraries()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s rank-follower %(name)s: %(message)s")
    sys.exit(follow(sys.argv[1] if len(sys.argv) > 1 else "auto"))
