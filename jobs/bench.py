"""Ray job: the scoring benchmark on a GPU node (paper's loop vs engine, early exit, Ray actors).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/bench.py --checkpoint /mnt/cluster_storage/meddiff/runs/chexpert-unet-paper \
        --out /mnt/cluster_storage/meddiff/bench --images 512 --n-draws 501 --batch-size 64

All logic lives in meddiff (``meddiff bench``).
"""

import sys

from meddiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
