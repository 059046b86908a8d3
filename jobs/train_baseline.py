"""Ray job: train a discriminative baseline (timm) with Ray Train.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train_baseline.py --config jobs/configs/chexpert-resnet50-a100.yaml --workers 4

All logic lives in meddiff (``meddiff train``); this file only fixes the method.
"""

import sys

from meddiff.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:], "--set", "method=baseline"]))
