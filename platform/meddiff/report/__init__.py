"""The comparison report (``meddiff report RESULTS...``): the paper's Table 1 for whatever runs exist, the
vote-vs-average ablations over N, t and the error target from stored per-draw errors, coverage curves (Fig. 3),
calibration and confusion matrices, written as parquet + markdown + PNG plots.

    from meddiff.report.build import build_report
    build_report(["runs/a/results", "baseline=runs/b/results"], "report/")
"""
