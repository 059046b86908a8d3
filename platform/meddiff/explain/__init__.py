"""Counterfactual explanations of scored images: selection, the sampler job (in-process or on Ray Data actors, sharded
exactly once like scoring), PNGs, a parquet index and a contact-sheet gallery.

    from meddiff.explain.job import explain_results
    explain_results(checkpoint, results_dir, out_dir, ExplainConfig(select="uncertain:8"))
"""
