"""Training infrastructure shared by every method: the loop (``loop``: setup, resume, progress, checkpoints, val),
the context (``context``: this process or a Ray Train worker, ``ray_trainer``), seeded batches (``batches``),
augmentation (``augment``) and the metrics log (``metrics_log``). The methods' own training steps live in
``meddiff.methods.<name>.train``; nothing here imports a method."""
