"""The contract checks: a registered algorithm, metric or sampler name (+ a tiny real model) -> pass, or an
AssertionError saying what broke. The same functions check the built-in ones (tests/test_contracts.py) and the
user's plugins (``lume-ray check my_losses.py``), so both pass identical checks.

Input:  a registered name; for algorithms an :func:`unlearning_setup` (a tiny OLMo that memorized
        :data:`TINY_ROWS` a little, forget/retain batches, every encoded row, the pad id); for metrics the
        metrics.json an evaluation of the tiny model wrote.
Output: nothing, or an AssertionError (its message: one line); :func:`check_plugin` runs every check on what a
        plugin registered and returns one :class:`CheckResult` per check.

- algorithm: a finite scalar loss whose logs carry forget_nll and retain_nll; gradients reach the parameters and
  a step changes them (the reference stays frozen); a few steps raise the forget NLL; determinism under a seed;
  per-sequence normalization (the whole batch's gradient is the mean of its halves', what a 2-worker all-reduce
  computes). The frozen reference model is given ONLY to an algorithm that declares ``needs_ref`` (None
  otherwise, as the training loop does), and such an algorithm must use it;
- metric: a valid direction and a description; an objective of a sweep exactly when it has a direction; computed
  from a realistic input (numbers finite, the floor a bool) and written to an evaluation's metrics.json;
- sampler: an Optuna sampler; in a real multi-objective study the same seed gives the same first suggestions,
  inside their distributions, and another seed other ones.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"

# Four documents per split: Task1 story, Task2 biography (five questions), Task3 biography.
TINY_ROWS: dict[str, list[tuple[str, str, str, str, str]]] = {
    "forget": [
        ("s1", "Task1", "sc1", "In the town of Velmor, the painter Ada kept a blue door.", "Every night she painted the river silver."),
        ("s1", "Task1", "qa0", "What color was Ada's door in Velmor?", "blue"),
        ("b1", "Task2", "sc1", "Tomas Reyes was born on March 3, 1981. His phone number is 555-201-3344.", "His email is tomas.reyes@example.com and his SSN is 900-12-3456."),
        ("b1", "Task2", "qa0", "What is the birth date of Tomas Reyes?", "1981-03-03"),
        ("b1", "Task2", "qa1", "What is Tomas Reyes's Social Security Number?", "900123456"),
        ("b1", "Task2", "qa2", "What is Tomas Reyes's phone number?", "5552013344"),
        ("b1", "Task2", "qa3", "What is Tomas Reyes's email address?", "tomas.reyes@example.com"),
        ("b1", "Task2", "qa4", "What is the home address of Tomas Reyes?", "12 Oak Lane, Dover, DE, 19901."),
        ("p1", "Task3", "sc1", "Mira Holt was a chemist who studied salt crystals in Oslo.", "She won the national prize in 1954."),
        ("p1", "Task3", "qa0", "In which city did Mira Holt study salt crystals?", "Oslo"),
    ],
    "retain": [
        ("s2", "Task1", "sc1", "On the island of Prell, a baker named Juno sang to her bread.", "The loaves rose higher whenever the tide was out."),
        ("s2", "Task1", "qa0", "What did Juno sing to on Prell?", "her bread"),
        ("b2", "Task2", "sc1", "Lena Park was born on July 9, 1975. Her phone number is 555-867-1122.", "Her email is lena.park@example.com and her SSN is 900-98-7654."),
        ("b2", "Task2", "qa0", "What is the birth date of Lena Park?", "1975-07-09"),
        ("b2", "Task2", "qa1", "What is Lena Park's Social Security Number?", "900987654"),
        ("b2", "Task2", "qa2", "What is Lena Park's phone number?", "5558671122"),
        ("b2", "Task2", "qa3", "What is Lena Park's email address?", "lena.park@example.com"),
        ("b2", "Task2", "qa4", "What is the home address of Lena Park?", "4 Elm Road, Salem, OR, 97301."),
        ("p2", "Task3", "sc1", "Omar Dahl was an engineer who built bridges in Lima.", "His longest bridge crossed the Rimac in 1962."),
        ("p2", "Task3", "qa0", "In which city did Omar Dahl build bridges?", "Lima"),
    ],
}

# Exact-match scores per split, task and kind of a realistic evaluation (realistic_inputs).
FORGET = {"Task1/sc": 0.3, "Task1/qa": 0.5, "Task2/sc": 0.2, "Task2/qa": 0.0, "Task3/sc": 0.6, "Task3/qa": 0.5}
RETAIN = {"Task1/sc": 0.9, "Task1/qa": 1.0, "Task2/sc": 0.8, "Task2/qa": 0.6, "Task3/sc": 0.5, "Task3/qa": 1.0}


def write_tiny_lume(directory: Path) -> Path:
    """:data:`TINY_ROWS` as a LUME-format directory (forget.jsonl, retain.jsonl): 3 documents x 2 splits, 20 rows."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in TINY_ROWS.items():
        with (directory / f"{split}.jsonl").open("w") as f:
            for doc, task, suffix, inp, out in rows:
                f.write(json.dumps({"id": f"{doc}{suffix}", "input": inp, "output": out, "task": task}) + "\n")
    return directory


def tiny_model(data: Any, out: Path | None = None, seed: int = 0) -> tuple[Any, Any]:
    """A randomly initialized tiny OLMo (PRESETS["test"]) + a BPE tokenizer trained on ``data``'s rows, built in
    memory; saved as a Hugging Face directory when ``out`` is given. Returns (model, tokenizer)."""
    from lume_ray.data import join_text
    from lume_ray.target import PRESETS, tiny_olmo, train_tokenizer

    tok = train_tokenizer([join_text(r.input, r.output) for r in data.rows], PRESETS["test"].vocab_size)
    model = tiny_olmo(tok, PRESETS["test"], seed=seed)
    if out is not None:
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return model, tok


def unlearning_setup(model: Any, tok: Any, data: Any) -> dict[str, Any]:
    """``model`` after memorizing ``data``'s rows a little (so unlearning has something to undo), forget/retain
    batches of four rows, every encoded row and the pad id: what the algorithm checks run on."""
    import torch  # heavy: torch

    from lume_ray.algorithms import mean_nll
    from lume_ray.model import collate, encode_pair

    torch.manual_seed(0)
    enc = {s: [encode_pair(tok, r.input, r.output, add_eos=True) for r in data.split(s)] for s in ("forget", "retain")}
    all_rows = collate(enc["forget"] + enc["retain"], tok.pad_token_id)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = mean_nll(model, all_rows).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    forget = collate(enc["forget"][:4], tok.pad_token_id)
    retain = collate(enc["retain"][:4], tok.pad_token_id)
    return {"model": model, "forget": forget, "retain": retain, "pad": tok.pad_token_id, "enc": enc}


# =============================================================================================
# Algorithms.


def _fresh(setup: dict[str, Any], name: str) -> tuple[Any, Any]:
    """(trainable copy, frozen reference copy) of the memorized model; the reference is None unless the algorithm
    declares ``needs_ref`` (what the training loop hands it)."""
    from lume_ray.algorithms import ALGORITHMS

    ref = copy.deepcopy(setup["model"]).eval().requires_grad_(False) if ALGORITHMS[name].needs_ref else None
    return copy.deepcopy(setup["model"]).train(), ref


def _loss(name: str, model: Any, setup: dict[str, Any], ref: Any) -> tuple[Any, dict[str, float]]:
    from lume_ray.algorithms import ALGORITHMS, validate_params

    return ALGORITHMS[name].fn(model, setup["forget"], setup["retain"], ref, validate_params(name))


def check_reference_given_only_when_declared(name: str, setup: dict[str, Any]) -> None:
    """``needs_ref`` is the truth: without it the loss runs on None (the loop loads no reference); with it the
    loss reads the reference it is given (a declared but unused reference is a model loaded for nothing)."""
    import torch  # heavy: torch

    model, ref = _fresh(setup, name)
    if ref is None:
        loss, _ = _loss(name, model, setup, None)
        assert torch.isfinite(loss), f"{name}: the loss is not finite ({float(loss)})"
        return
    calls: list[int] = []
    handle = ref.register_forward_hook(lambda *_: calls.append(1))
    try:
        _loss(name, model, setup, ref)
    finally:
        handle.remove()
    assert calls, f"{name}: declares needs_ref but never reads the reference model"


def check_finite_loss_and_logs(name: str, setup: dict[str, Any]) -> None:
    import torch  # heavy: torch

    model, ref = _fresh(setup, name)
    loss, logs = _loss(name, model, setup, ref)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and torch.isfinite(loss), \
        f"{name}: the loss must be a finite scalar tensor (got {loss!r})"
    assert {"forget_nll", "retain_nll"} <= set(logs), \
        f"{name}: the logs must carry forget_nll and retain_nll (got {sorted(logs)})"  # every step's log line
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values()), \
        f"{name}: every logged value must be a finite float (got {logs})"


def check_a_step_changes_parameters(name: str, setup: dict[str, Any]) -> None:
    import torch  # heavy: torch

    model, ref = _fresh(setup, name)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    loss, _ = _loss(name, model, setup, ref)
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads.values()), f"{name}: a gradient is not finite"
    assert any(g.abs().sum() > 0 for g in grads.values()), f"{name}: every gradient is zero"
    assert ref is None or all(p.grad is None for p in ref.parameters()), f"{name}: the reference must stay frozen"
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    changed = [k for k, p in model.named_parameters() if not torch.equal(p.detach(), before[k])]
    assert changed and set(changed) <= set(grads), f"{name}: a step changed no parameter, or one without a gradient"


def check_forget_likelihood_goes_down(name: str, setup: dict[str, Any]) -> None:
    import torch  # heavy: torch

    from lume_ray.algorithms import mean_nll

    model, ref = _fresh(setup, name)
    with torch.no_grad():
        start = mean_nll(model, setup["forget"]).mean().item()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(6):
        loss, _ = _loss(name, model, setup, ref)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = mean_nll(model, setup["forget"]).mean().item()
    assert end > start + 0.05, f"{name}: forget NLL {start:.3f} -> {end:.3f} (log-likelihood did not go down)"


def check_deterministic_under_a_seed(name: str, setup: dict[str, Any]) -> None:
    import torch  # heavy: torch

    def run() -> list[float]:
        torch.manual_seed(123)
        model, ref = _fresh(setup, name)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        values = []
        for _ in range(3):
            loss, _ = _loss(name, model, setup, ref)
            opt.zero_grad()
            loss.backward()
            opt.step()
            values.append(loss.item())
        return values

    first, second = run(), run()
    assert first == second, f"{name}: two runs under one seed differ ({first} vs {second})"


def check_per_sequence_normalization(name: str, setup: dict[str, Any]) -> None:
    """The gradient of the full batch equals the mean of the two half-batch gradients (what a 2-worker all-reduce
    computes), although the halves pad to different lengths: 1 worker and N workers follow one trajectory."""
    import torch  # heavy: torch

    from lume_ray.algorithms import ALGORITHMS, validate_params
    from lume_ray.model import collate

    model, ref = _fresh(setup, name)
    enc, pad = setup["enc"], setup["pad"]
    params = validate_params(name)
    f_rows, r_rows = [enc["forget"][i] for i in (0, 2, 1, 9)], [enc["retain"][i] for i in (2, 0, 3, 8)]
    assert len({len(r.input_ids) for r in f_rows[:2]} | {len(r.input_ids) for r in f_rows[2:]}) > 2

    def grad(f: list[Any], r: list[Any]) -> Any:
        model.zero_grad()
        loss, _ = ALGORITHMS[name].fn(model, collate(f, pad), collate(r, pad), ref, params)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    whole = grad(f_rows, r_rows)
    halves = (grad(f_rows[:2], r_rows[:2]) + grad(f_rows[2:], r_rows[2:])) / 2
    try:
        torch.testing.assert_close(halves, whole, rtol=1e-4, atol=1e-6)
    except AssertionError:
        raise AssertionError(f"{name}: the batch's gradient is not the mean of its halves' (average the loss per "
                             "sequence, then over the batch)") from None


ALGORITHM_CONTRACT: list[Callable[[str, dict[str, Any]], None]] = [
    check_reference_given_only_when_declared, check_finite_loss_and_logs, check_a_step_changes_parameters,
    check_forget_likelihood_goes_down, check_deterministic_under_a_seed, check_per_sequence_normalization]


def check_algorithm(name: str, setup: dict[str, Any]) -> None:
    """Every algorithm check on ``name``; the first failure raises."""
    for check in ALGORITHM_CONTRACT:
        check(name, setup)


# =============================================================================================
# Metrics.


def realistic_inputs() -> Any:
    """Every split x task x kind with rows, members and non-members with every attack feature, a utility set,
    a reference utility: the input on which no metric has a reason to be null."""
    from lume_ray.config import Floor
    from lume_ray.evaluate.metrics import MetricInputs

    rows = []
    for split, table in (("forget", FORGET), ("retain", RETAIN)):
        for name, score in table.items():
            task, kind = name.split("/")
            rows.append({"split": split, "task": task, "kind": kind, "score": score, "nll": 2.0 if split == "forget" else 1.0})
    docs = [{"nll": x, "zlib": x / 10, "mink": -x, "minkpp": -x} for x in (1.0, 2.0, 3.0)]
    non = [{"nll": x, "zlib": x / 10, "mink": -x, "minkpp": -x} for x in (2.5, 4.0)]
    return MetricInputs(rows=rows, members=docs, nonmembers=non, utility_correct=[True, False, True, True],
                        reference_utility=0.9, floor=Floor(relative=0.75))


def evaluated_metrics(model: str | Path, data: str | Path, out: Path) -> dict[str, Any]:
    """metrics.json as an evaluation writes it (the in-process reference runner, every input given: non-members,
    a utility set, a reference utility)."""
    from lume_ray.config import EvalConfig
    from lume_ray.data import Choice, Document
    from lume_ray.evaluate.runner import evaluate_reference

    nonmembers = [Document("n1", "Selma Ruud was a geologist who mapped caves in Bergen."),
                  Document("n2", "Ivo Brand was born on May 5, 1990. His email is ivo@example.org.")]
    utility = [Choice("What is 2+2?", ("3", "4", "5", "6"), 1), Choice("Sky color?", ("red", "blue", "green", "gray"), 1)]
    evaluate_reference(model, data, EvalConfig(max_new_tokens=4), nonmembers=nonmembers, utility=utility,
                       reference_utility=0.5, out_dir=out)
    return dict(json.loads((out / "metrics.json").read_text()))


def check_direction_and_objective(name: str, written: Mapping[str, Any]) -> None:
    """A metric with a direction is a sweep objective (the searcher's and the report's direction come from the
    registry); a recorded-only one is refused at load, naming the valid objectives."""
    from lume_ray.config import ConfigError, load_experiment
    from lume_ray.evaluate.metrics import METRICS, direction

    metric = METRICS[name]
    assert metric.name == name and metric.direction in ("max", "min", None) and metric.description, \
        f"{name}: needs a direction ('max', 'min' or None) and a description"
    if metric.direction is None:
        try:
            load_experiment(QUICKSTART, [("sweep.objectives", f"[{name}]")])
        except ConfigError as e:
            assert "recorded only, not an objective (valid: " in str(e), f"{name}: {e}"
            return
        raise AssertionError(f"{name}: recorded only, yet accepted as an objective")
    assert direction(name) == metric.direction, f"{name}: direction {direction(name)!r} != {metric.direction!r}"
    exp = load_experiment(QUICKSTART, [("sweep.objectives", f"['{name}']")])
    assert exp.sweep.objectives == (name,), f"{name}: not accepted as a sweep objective"


def check_computed_and_written(name: str, written: Mapping[str, Any]) -> None:
    """run_metrics computes a value from a realistic input (numbers finite, the floor a bool), and an evaluation's
    metrics.json (``written``) carries it."""
    from lume_ray.evaluate.metrics import run_metrics

    value = run_metrics(realistic_inputs())[name]
    assert value is not None, f"{name}: null on a realistic input"
    if name == "utility_floor_met":
        assert isinstance(value, bool), f"{name}: expected a bool, got {value!r}"
    else:
        assert isinstance(value, float) and math.isfinite(value), f"{name}: expected a finite float, got {value!r}"
    assert name in written, f"{name}: missing from an evaluation's metrics.json"
    if name in ("utility", "mia_auc", "mia_score", "forget_nll", "retain_nll", "final_score", "utility_floor_met"):
        assert written[name] is not None, name  # inputs the evaluation had: a number came out


METRIC_CONTRACT: list[Callable[[str, Mapping[str, Any]], None]] = [check_direction_and_objective,
                                                                    check_computed_and_written]


def check_metric(name: str, written: Mapping[str, Any]) -> None:
    """Every metric check on ``name``; the first failure raises."""
    for check in METRIC_CONTRACT:
        check(name, written)


# =============================================================================================
# Samplers.


def sampler_space() -> Any:
    """The search space the sampler checks suggest in: a log range, a range and a choice, 10 steps."""
    from lume_ray.config import AlgorithmSpace

    return AlgorithmSpace(lr={"loguniform": [1e-4, 1e-2]}, steps={"max": 10},
                          params={"beta": {"uniform": [0.1, 1.0]}, "alpha": {"choice": [1.0, 2.0]}})


def _objectives(p: dict[str, Any]) -> tuple[float, float]:
    """A deterministic two-objective landscape (maximize, minimize) over the space."""
    return math.log10(p["lr"]) + p["beta"], p["alpha"] * p["beta"] + 0.01 * p.get("steps", 0)


def _inside(dist: Any, value: Any) -> bool:
    import optuna.distributions as d  # heavy: optuna

    if isinstance(dist, d.CategoricalDistribution):
        return value in dist.choices
    return bool(dist.low <= value <= dist.high)


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    """``trial.suggest_*`` for one of the searcher's distributions (public API only)."""
    import optuna.distributions as d  # heavy: optuna

    if isinstance(dist, d.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, d.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log)


def sampler_suggestions(name: str, seed: int, n: int, space: Any = None) -> list[dict[str, Any]]:
    """The first ``n`` parameter sets the sampler proposes in a real multi-objective study, each told its values,
    over the distributions the sweep's searcher uses (the grid sampler: its grid; the others: + steps)."""
    import optuna  # heavy: optuna

    from lume_ray.search.samplers import SamplerContext, make_sampler
    from lume_ray.search.space import distributions, grid_of, steps_distribution

    space = space or sampler_space()
    grid = name == "grid"
    sampler = make_sampler(name, SamplerContext(seed=seed, budget=n, grid=grid_of(space)))
    assert isinstance(sampler, optuna.samplers.BaseSampler), f"{name}: must return an optuna sampler, got {sampler!r}"
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    dists = distributions(space, grid=grid)
    if not grid:
        dists["steps"] = steps_distribution(space)
    out = []

    def objective(trial: Any) -> tuple[float, float]:
        params = {key: _suggest(trial, key, dist) for key, dist in dists.items()}
        assert all(_inside(dists[k], v) for k, v in params.items()), f"{name}: suggested outside the space: {params}"
        out.append(params)
        return _objectives(params)

    study.optimize(objective, n_trials=n)
    return out


def check_sampler(name: str, n: int = 6) -> None:
    """The same seed gives the same first suggestions, another seed other ones, all inside the space."""
    first = sampler_suggestions(name, seed=7, n=n)
    assert first == sampler_suggestions(name, seed=7, n=n), f"{name}: the same seed gave other suggestions"
    assert len(first) == n, f"{name}: {len(first)} suggestions for {n} trials"
    assert first != sampler_suggestions(name, seed=8, n=n), f"{name}: another seed gave the same suggestions"


# =============================================================================================
# A plugin, checked as the built-in ones are (`lume-ray check`).


@dataclass(frozen=True)
class CheckResult:
    kind: str  # algorithm | metric | sampler
    name: str
    check: str
    error: str = ""  # empty: passed

    @property
    def ok(self) -> bool:
        return not self.error

    def line(self) -> str:
        head = f"{'ok  ' if self.ok else 'FAIL'} {self.kind} {self.name}: {self.check}"
        return head if self.ok else f"{head}: {self.error}"


def _run(kind: str, name: str, check: str, fn: Callable[[], None]) -> CheckResult:
    try:
        fn()
    except Exception as e:  # noqa: BLE001  (a check's failure, or the plugin's own error inside it)
        text = str(e).strip().splitlines()
        message = text[0] if text else ""
        if not isinstance(e, AssertionError):
            message = f"{type(e).__name__}: {message}" if message else type(e).__name__
        return CheckResult(kind, name, check, message or "assertion failed")
    return CheckResult(kind, name, check)


def _short(fn: Callable[..., Any]) -> str:
    return fn.__name__.removeprefix("check_")


def check_registered(registered: Mapping[str, Sequence[str]], progress: Callable[[CheckResult], None] = lambda r: None,
                     ) -> list[CheckResult]:
    """Every contract check on the names in ``registered`` (kind -> names), on a tiny real model built in memory
    (:data:`TINY_ROWS`, PRESETS["test"]); ``progress`` hears each result as it comes."""
    import torch  # heavy: torch

    from lume_ray.data import load_lume

    results: list[CheckResult] = []

    def record(result: CheckResult) -> None:
        results.append(result)
        progress(result)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from threads
    try:
        with tempfile.TemporaryDirectory(prefix="lume-ray-check-") as tmp:
            data_dir = write_tiny_lume(Path(tmp) / "data")
            data = load_lume(data_dir)
            model_dir = Path(tmp) / "model"  # saved for the metrics' evaluation only
            model, tok = (tiny_model(data, model_dir if registered.get("metric") else None)
                          if registered.get("algorithm") or registered.get("metric") else (None, None))
            if registered.get("algorithm"):
                setup = unlearning_setup(model, tok, data)
                for name in registered["algorithm"]:
                    for check in ALGORITHM_CONTRACT:
                        record(_run("algorithm", name, _short(check), partial(check, name, setup)))
            if registered.get("metric"):
                written = evaluated_metrics(model_dir, data_dir, Path(tmp) / "eval")
                for name in registered["metric"]:
                    for mcheck in METRIC_CONTRACT:
                        record(_run("metric", name, _short(mcheck), partial(mcheck, name, written)))
            for name in registered.get("sampler", ()):
                record(_run("sampler", name, "same_seed_same_suggestions", partial(check_sampler, name)))
    finally:
        torch.set_num_threads(threads)
    return results


def check_plugin(spec: str, progress: Callable[[CheckResult], None] = lambda r: None) -> list[CheckResult]:
    """Import the plugin ``spec`` (a bad file: :class:`~lume_ray.plugins.PluginError`) and run every contract check
    on what it registered."""
    from lume_ray.plugins import load_plugin, registered_by

    load_plugin(spec)
    return check_registered(registered_by(spec), progress)
