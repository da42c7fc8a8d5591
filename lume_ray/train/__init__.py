"""[3 unlearn] Train: an unlearning job on Ray Train workers running DeepSpeed ZeRO.

    ds_config.py  the DeepSpeed config from a JSON template (deepspeed/*.json) and the job
    batches.py    the seeded (seed, step) -> global batch function, sliced per rank
    lora.py       PEFT adapter, its merge, the adapter-off reference
    loop.py       the worker loop (every rank)
    job.py        the driver: checks, TorchTrainer, resume, the result
"""

from lume_ray.train.job import EvalPoint, UnlearnResult, read_points, run_unlearning

__all__ = ["EvalPoint", "UnlearnResult", "read_points", "run_unlearning"]
