"""``meddiff cv``: grouped, stratified k-fold cross-validation as one job.

Every fold is a Ray Train run of the experiment with ``data.cv_folds = K`` and ``data.cv_fold = k`` (the folds of
``meddiff.data.manifest.group_folds``: no patient or lesion in two folds), its test split scored by a Ray Data job and
its val split too (calibration data). The folds' test rows are pooled into one out-of-fold results set that the report
and the dashboard read like any other (``cv/pool.py``); ``cv/summary.py`` gives per-fold figures, their mean and
standard deviation, and the pooled figures with bootstrap confidence intervals; ``cv/run.py`` drives the folds and
resumes fold by fold.
"""
