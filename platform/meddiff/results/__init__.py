"""Results: the contract between the producers of results folders (scoring, the methods' predictors, ``meddiff
explain``) and their readers (the report, the dashboard, the serving endpoint, the benchmark).

    schema           the columns and Arrow schema of every results parquet (the one schema module)
    store            a results folder on disk: meta.json, the part files, the schema-checked table
    explain_schema   the columns of an explanation index (``<out>/index/shard-*.parquet``)
    explanations     reading an explanation folder (explain.json, the index)
    runs             the read model of a results set: its scored rows, method, capabilities, draws, throughput
    root             a results root nothing outside of is read from, and the results sets under it
    overview         the runs overview (the dashboard's Table 1 comparison), one row per results set
    curves           accuracy against coverage and against an uncertainty threshold
    image            one scored image as frames: votes per class, per-draw errors, the vote share as draws accumulate;
                     its stored pixels for display
    strata           metrics per metadata stratum and the shortcut probe, with cluster-bootstrap CIs over groups
    gallery          an explanation folder as gallery items, every path checked to be under the root

The package imports no torch and no model code (``meddiff.models``, ``meddiff.diffusion``, ``meddiff.methods``' model
modules), so reading results needs neither; what a method can do is read from meta.json (``method_capabilities``),
falling back to ``meddiff.method_registry`` for folders written before that key existed.
"""
