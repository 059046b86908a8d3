"""Ray job: score a data split with a checkpoint on a pool of Ray Data actors (one model per actor).

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/score.py --checkpoint /mnt/cluster_storage/meddiff/runs/chexpert-unet-paper \
        --config jobs/configs/chexpert-unet-a100.yaml --out /mnt/cluster_storage/meddiff/results/chexpert --actors 8

All logic lives in meddiff (``meddiff score --ray``).
"""

import sys

from meddiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", "--ray", *sys.argv[1:]]))
