"""[3 unlearn] The worker loop: runs in every Ray Train worker; sees only what the driver passed it.

Input:  ``{"job": UnlearnJob as a dict, "ds_config": dict}`` (the loop config of the TorchTrainer).
Output: under ``job.out``: ``train_log.jsonl`` (one line per step), ``points.jsonl`` and ``points/step_KKKKKK/``
        (a Hugging Face model directory at every evaluation point: ZeRO-3 weights gathered by DeepSpeed's
        ``save_16bit_model``, LoRA merged by PEFT, tokenizer copied); a DeepSpeed checkpoint reported to Ray
        Train at every point (what a re-run resumes from).

Top to bottom: load data, model (+ frozen reference) as DeepSpeed engines -> resume from Ray's checkpoint ->
for each step: the seeded forget/retain micro-batch of this rank -> algorithm loss -> all-reduced loss check
(NaN/inf: every rank stops together) -> backward/step -> log line; at each evaluation point: mean forget/retain
loss on a fixed subset, save the model (rank 0), DeepSpeed checkpoint (all ranks) + ``ray.train.report``; at a
``wait_steps`` point, hold until the driver's go-ahead file appears (early stopping judges the trial there).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lume_ray.config import UnlearnJob
from lume_ray.data import load_lume
from lume_ray.run_dir import STEP_DIR
from lume_ray.train.batches import (
    EVAL_STREAM,
    FORGET_STREAM,
    RETAIN_STREAM,
    _permutation,
    batch_indices,
    worker_slice,
)
from lume_ray.train.ds_config import reference_ds_config
from lume_ray.train.lora import AdapterOffReference, apply_lora, merged_state_dict

EVAL_ROWS = 64  # rows per split in the fixed subset whose mean losses each evaluation point reports
LOG_NAME, POINTS_NAME, STATE_NAME = "train_log.jsonl", "points.jsonl", "state.json"
CKPT_TAG = "ckpt"
GO_POLL_S = 0.5  # how often a job waiting at a point checks for its go-ahead


def go_path(out: str | os.PathLike[str], step: int) -> Path:
    """The file whose appearance lets a job waiting at ``step`` (one of its ``wait_steps``) train on."""
    return Path(out) / "go" / STEP_DIR.format(step)


def say(message: str) -> None:
    """A progress line from a worker. Ray Train patches ``print`` into its logger, which the driver then
    shows twice; writing to the stream shows it once."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_jsonl(path: Path, keep_through: int) -> None:
    """Drop lines of a per-step jsonl whose step is beyond ``keep_through`` (resume after a crash)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= keep_through]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


class Worker:
    """One rank's state: the job, its tokenized data, the DeepSpeed engine(s). Built by :meth:`setup`."""

    def __init__(self, job: UnlearnJob, ds_config: dict[str, Any]) -> None:
        import ray.train  # heavy: ray
        import torch  # heavy: torch

        self.job, self.ds_config = job, ds_config
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.is_main = self.rank == 0
        self.out = Path(job.out)
        self.device = torch.device("cpu")
        if job.train.use_gpu:
            import ray.train.torch  # heavy: ray

            self.device = ray.train.torch.get_device()
        self.engine: Any = None
        self.ref: Any = None

    # -- set-up ---------------------------------------------------------------------------------

    def setup(self) -> None:
        import deepspeed  # heavy: deepspeed
        import ray  # heavy: ray
        import torch  # heavy: torch

        from lume_ray.model import encode_pair, load_tokenizer  # heavy: torch, transformers

        job = self.job
        # Which process runs each rank: for operators (py-spy, kill) and the worker-death tests.
        (self.out / "workers").mkdir(parents=True, exist_ok=True)
        (self.out / "workers" / f"rank{self.rank}.json").write_text(
            json.dumps({"pid": os.getpid(), "world_size": self.world,
                        "node_id": ray.get_runtime_context().get_node_id()}))  # which node: the multi-node test
        deepspeed.init_distributed(dist_backend="nccl" if job.train.use_gpu else "gloo")  # wraps Ray's group
        torch.manual_seed(job.seed)  # LoRA init and dropout
        self.tokenizer = load_tokenizer(job.model, trust_remote_code=job.trust_remote_code)
        data = load_lume(job.data)
        self.enc = {split: [encode_pair(self.tokenizer, r.input, r.output, add_eos=True,
                                        max_length=job.train.max_length) for r in data.split(split)]
                    for split in ("forget", "retain")}
        self._load_engines()

    def _load_engines(self) -> None:
        import deepspeed  # heavy: deepspeed
        import torch  # heavy: torch
        from transformers import AutoModelForCausalLM  # heavy: transformers

        from lume_ray.algorithms import get_algorithm  # heavy: torch

        job = self.job
        dtype = torch.bfloat16 if job.train.resolved_precision == "bf16" else torch.float32
        hf_ds = None
        if job.train.zero == 3:
            # Keeps transformers' from_pretrained inside deepspeed.zero.Init: the weights are sharded as they
            # load, so no worker ever holds the whole model (what makes 7B fit).
            from transformers.integrations import HfDeepSpeedConfig  # heavy: transformers

            hf_ds = HfDeepSpeedConfig(self.ds_config)  # noqa: F841 (must stay alive while models load)

        def load() -> Any:
            return AutoModelForCausalLM.from_pretrained(job.model, dtype=dtype, trust_remote_code=job.trust_remote_code)

        model = load()
        self.model_config = model.config
        if job.train.lora is not None:
            model = apply_lora(model, job.train.lora)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.engine, *_ = deepspeed.initialize(model=model, model_parameters=trainable, config=self.ds_config)
        if get_algorithm(job.algorithm).needs_ref:
            if job.train.lora is not None:
                self.ref = AdapterOffReference(self.engine)
            elif job.train.zero == 3:
                self.ref, *_ = deepspeed.initialize(model=load(), config=reference_ds_config(self.ds_config))
                self.ref.eval()
            else:
                self.ref = load().to(self.device).eval().requires_grad_(False)

    # -- helpers --------------------------------------------------------------------------------

    def batch(self, split: str, idx: Sequence[int]) -> dict[str, Any]:
        from lume_ray.model import collate  # heavy: torch, transformers

        return {k: v.to(self.device) for k, v in collate([self.enc[split][i] for i in idx],
                                                          self.tokenizer.pad_token_id).items()}

    def all_mean(self, values: Sequence[float]) -> list[float]:
        import torch  # heavy: torch

        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)  # SUM; NaN anywhere -> NaN everywhere, so all ranks agree
        return (t / self.world).tolist()

    def eval_losses(self) -> tuple[float, float]:
        """Mean forget / retain NLL on a fixed subset, sharded so every rank runs the same number of forwards."""
        import torch  # heavy: torch

        from lume_ray.algorithms import mean_nll  # heavy: torch

        micro = self.job.train.micro_batch
        self.engine.eval()
        sums = []
        with torch.no_grad():
            for split, stream in (("forget", FORGET_STREAM), ("retain", RETAIN_STREAM)):
                rows = list(_permutation(len(self.enc[split]), self.job.seed, EVAL_STREAM + stream, 0)[:EVAL_ROWS])
                mine = rows[self.rank::self.world]
                n_batches = math.ceil(math.ceil(len(rows) / self.world) / micro)
                total, count = 0.0, 0.0
                for b in range(n_batches):
                    chunk = mine[b * micro:(b + 1) * micro]
                    nll = mean_nll(self.engine, self.batch(split, chunk or rows[:1]))  # an empty shard still joins
                    if chunk:
                        total, count = total + float(nll.sum()), count + len(chunk)
                sums += [total, count]
        self.engine.train()
        s = self.all_mean(sums)
        return s[0] / max(s[1], 1e-9), s[2] / max(s[3], 1e-9)

    # -- resume, points, the end ----------------------------------------------------------------

    def resume(self) -> tuple[int, str, str]:
        """(step, status, reason) of Ray Train's latest checkpoint (0, "running", "" when none)."""
        import ray.train  # heavy: ray

        start, status, reason = 0, "running", ""
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                state = json.loads((Path(d) / STATE_NAME).read_text())
                start, status, reason = int(state["step"]), state["status"], state.get("reason", "")
                if status != "diverged":
                    self.engine.load_checkpoint(d, tag=CKPT_TAG)
        if self.is_main:
            (self.out / "points").mkdir(parents=True, exist_ok=True)
            for name in (LOG_NAME, POINTS_NAME):  # lines past the checkpoint belong to a lost attempt
                truncate_jsonl(self.out / name, start)
            if checkpoint is not None:
                say(f"[unlearn] resumed from step {start} ({status})")
        return start, status, reason

    def save_point(self, step: int, resumed_from: int) -> None:
        """Save the HF model dir (rank 0), a DeepSpeed checkpoint (all ranks) and report both."""
        import ray.train  # heavy: ray

        forget_loss, retain_loss = self.eval_losses()
        model_dir = self.out / "points" / STEP_DIR.format(step)
        self._save_model(model_dir)
        status = "completed" if step >= self.job.steps else "running"
        metrics = {"step": step, "status": status, "reason": "", "forget_loss": forget_loss,
                   "retain_loss": retain_loss, "model_dir": str(model_dir), "resumed_from": resumed_from}
        with tempfile.TemporaryDirectory(prefix="lume-ckpt-") as d:
            self.engine.save_checkpoint(d, tag=CKPT_TAG)
            if self.is_main:
                (Path(d) / STATE_NAME).write_text(json.dumps(metrics))
                append_jsonl(self.out / POINTS_NAME, {k: metrics[k] for k in ("step", "forget_loss", "retain_loss",
                                                                                "model_dir")})
                say(f"[unlearn] point step {step}: forget loss {forget_loss:.4f} retain loss {retain_loss:.4f} "
                    f"-> {model_dir}")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"checkpoint_step_{step:06d}")

    def _save_model(self, model_dir: Path) -> None:
        """A loadable HF model dir, written atomically (temp dir, then rename). The weights come from
        DeepSpeed's public ``save_16bit_model`` (under ZeRO-3 a collective that gathers the shards to rank 0;
        needs ``stage3_gather_16bit_weights_on_model_save``), the LoRA merge from PEFT."""

        import torch  # heavy: torch

        from lume_ray.model import save_model, save_tokenizer  # heavy: torch, transformers

        with tempfile.TemporaryDirectory(prefix="lume-weights-") as d:
            if not self.engine.save_16bit_model(d, "weights.bin"):
                raise RuntimeError("DeepSpeed did not save the model weights (ZeRO-3 needs "
                                   "stage3_gather_16bit_weights_on_model_save: true in its config)")
            if not self.is_main:
                return
            state = torch.load(Path(d) / "weights.bin", map_location="cpu", weights_only=True)
        if self.job.train.lora is not None:
            state = merged_state_dict(self.model_config, self.job.train.lora, state)
            base = self.engine.module.get_base_model()
        else:
            base = self.engine.module
        state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        tmp = model_dir.with_name(f".{model_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        save_model(base, tmp, state_dict=state)  # loads with transformers 4.45 (the challenge's pin) and 5.x
        save_tokenizer(self.tokenizer, tmp)
        if model_dir.exists():  # left by an attempt that crashed after writing it
            shutil.rmtree(model_dir)
        tmp.rename(model_dir)

    def wait_for_go(self, step: int) -> None:
        """Hold every rank at ``step`` until the driver writes :func:`go_path` (rank 0 looks; a small all-reduce
        each poll tells the others, so no rank sits in one collective long enough to time out). A driver that
        stops the trial instead ends the job with it."""
        path, t0 = go_path(self.out, step), time.time()
        if self.is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".waiting").touch()  # for a reader that wants to know the job is held here
            say(f"[unlearn] step {step}: waiting for the point to be scored and the trial judged")
        while self.all_mean([1.0 if self.is_main and path.exists() else 0.0])[0] == 0.0:
            time.sleep(GO_POLL_S)
        if self.is_main:
            say(f"[unlearn] step {step}: go-ahead after {time.time() - t0:.1f} s")

    def report_end(self, step: int, status: str, reason: str, resumed_from: int) -> None:
        """End a diverged run: every rank reports (a barrier); rank 0 attaches a small state checkpoint so
        the driver reads the status from Result.metrics (Train V2 keeps only checkpointed metrics)."""
        import ray.train  # heavy: ray

        metrics = {"step": step, "status": status, "reason": reason, "resumed_from": resumed_from}
        if not self.is_main:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="lume-marker-") as d:
            (Path(d) / STATE_NAME).write_text(json.dumps(metrics))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                             checkpoint_dir_name=f"checkpoint_{status}_{step:06d}")

    # -- the loop -------------------------------------------------------------------------------

    def step(self, step: int) -> tuple[float, float, float, dict[str, float]]:
        """One optimizer step: the all-reduced (loss, forget NLL, retain NLL) and the rank's logs. A non-finite
        loss skips backward and step (the caller ends the run)."""
        from lume_ray.algorithms import get_algorithm  # heavy: torch

        job, train = self.job, self.job.train
        f_idx = worker_slice(batch_indices(len(self.enc["forget"]), train.batch_size, step, job.seed, FORGET_STREAM),
                             self.rank, self.world)
        r_idx = worker_slice(batch_indices(len(self.enc["retain"]), train.batch_size, step, job.seed, RETAIN_STREAM),
                             self.rank, self.world)
        loss, logs = get_algorithm(job.algorithm).fn(self.engine, self.batch("forget", f_idx),
                                                     self.batch("retain", r_idx), self.ref, job.params)
        loss_v, forget_v, retain_v = self.all_mean([float(loss.detach()), logs["forget_nll"], logs["retain_nll"]])
        if not math.isfinite(loss_v):
            # Checked before backward, on the all-reduced value: every rank sees the same NaN and stops
            # at the same step (no rank left waiting in a collective, no traceback from each worker).
            return loss_v, forget_v, retain_v, logs
        self.engine.backward(loss)
        self.engine.step()
        return loss_v, forget_v, retain_v, logs

    def run(self) -> None:
        job = self.job
        start, status, reason = self.resume()
        if status == "diverged":  # re-running a diverged job gives its verdict again, not a new attempt
            self.report_end(start, status, reason, start)
            return
        if start in job.wait_steps and start < job.steps:  # resumed at a point never judged (no go-ahead yet)
            self.wait_for_go(start)
        self.engine.train()
        t_start = time.time()
        for step in range(start + 1, job.steps + 1):
            t0 = time.time()
            loss_v, forget_v, retain_v, logs = self.step(step)
            if not math.isfinite(loss_v):
                reason = f"non-finite loss ({loss_v}) at step {step}"
                if self.is_main:
                    append_jsonl(self.out / LOG_NAME, {"step": step, "loss": loss_v, "status": "diverged"})
                    say(f"[unlearn] diverged: {reason}")
                self.report_end(step - 1, "diverged", reason, start)
                return
            now = time.time()
            if self.is_main:
                append_jsonl(self.out / LOG_NAME, {
                    "step": step, "loss": loss_v, "forget_loss": forget_v, "retain_loss": retain_v,
                    "lr": self.engine.get_lr()[0], "step_s": now - t0, "wall_s": now - t_start, "time": now,
                    "cpu_s": time.process_time(),  # this worker's CPU seconds: overhead on a busy machine
                    **{k: v for k, v in logs.items() if k not in ("forget_nll", "retain_nll")}})
                say(f"[unlearn] step {step}/{job.steps} loss {loss_v:.4f} forget {forget_v:.4f} "
                    f"retain {retain_v:.4f} ({now - t0:.2f} s/step)")
            if step in job.eval_steps:
                self.save_point(step, start)
            if step in job.wait_steps and step < job.steps:
                self.wait_for_go(step)
        if start >= job.steps:  # already past the requested steps: report where it stands again
            self.save_point(start, start)


def train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train worker function: everything it needs arrives in ``loop_config``."""
    worker = Worker(UnlearnJob.model_validate(loop_config["job"]), loop_config["ds_config"])
    worker.setup()
    worker.run()
