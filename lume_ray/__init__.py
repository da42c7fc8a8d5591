"""lume-ray: LLM-unlearning experiments (LUME / SemEval-2025 Task 4) on a Ray cluster.

Stages (one module each): data -> model/target -> algorithms + train -> evaluate (+ metrics)
-> sweep -> report; pipeline.py runs them in order, cli.py parses the command line.
"""

__version__ = "0.1.0"
