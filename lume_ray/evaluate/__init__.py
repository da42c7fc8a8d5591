"""[3 evaluate] Evaluation: a model + LUME data -> per-row scores and metrics.json, by the challenge's protocol.

    inputs.py   data, MIA documents, utility set -> checked work items
    scoring.py  a loaded model + items -> generations, scores, loss features (shared by every runner)
    prompts.py  a four-way question -> its MMLU / option prompts; the picked option
    protocol.py the LUME arithmetic: per-row scores, task scores, aggregates, the final score
    mia.py      membership inference: attack features, ROC-AUC, the MIA score
    metrics.py  the metric registry: each metric with its direction and its computation
    runner.py   Ray Data actor pool (evaluate, evaluate_many), the one-prompt reference, outputs
    pool.py     a pool of model actors that lives for a whole sweep (every trial's points)

Import from the submodules; this package imports nothing heavy so that the config can read the registry.
"""
