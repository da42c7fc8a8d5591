"""The command line generated from the config models: a field of UnlearnJob / TrainConfig / EvalConfig / SynthConfig /
BuildConfig is a flag (its description the help, its default shown), the flag's value is validated by the model,
and a validation error names the flag. No stage runs here: the stage functions are replaced by recorders.
"""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from lume_ray.cli import main
from lume_ray.cli_options import Parser, add_model_options
from lume_ray.config import BuildConfig, EvalConfig, LoraConfig, SynthConfig, TrainConfig, UnlearnJob


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: one line of words


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _fields(model: type[BaseModel], skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Leaf fields of ``model``, nested models flattened (what add_model_options makes flags of)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            out.update(_fields(nested, skip))
        else:
            out[name] = field
    return out


COMMANDS = [
    (["unlearn"], UnlearnJob, ("params", "lora", "wait_steps")),  # params: --set KEY=VALUE; lora: --lora KEY=VALUE;
    # wait_steps: only a sweep's trial gives the go-ahead a waiting job needs
    (["eval"], EvalConfig, ()),
    (["data", "synth"], SynthConfig, ()),
    (["target", "build"], BuildConfig, ()),
]


@pytest.mark.parametrize(("argv", "model", "skip"), COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_help_lists_a_flag_for_every_field(argv: list[str], model: type[BaseModel], skip: tuple[str, ...],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    text = _help(argv, capsys)
    fields = _fields(model, skip)
    assert fields
    for name, field in fields.items():
        flag = _flag(name)
        assert re.search(rf"{flag}\b", text), f"{' '.join(argv)}: no {flag} for {model.__name__}.{name}"
        if field.description:  # the help is the field's description, % shown as typed
            assert " ".join(field.description.split()) in text, (flag, field.description)
        if not field.is_required():
            assert "(default: " in text
    if model is UnlearnJob:
        for flag in ("--set", "--lora", "--eval-every", "--address"):
            assert re.search(rf"{flag}\b", text)
        assert set(_fields(TrainConfig, ("lora",))) <= set(fields)  # TrainConfig's fields are unlearn flags too
    assert "%%" not in text


def test_unlearn_flags_cover_unlearn_job_and_train_config(capsys: pytest.CaptureFixture[str]) -> None:
    """The list, spelled out once, so that a field added to either model shows up here as a failure to update."""
    text = _help(["unlearn"], capsys)
    flags = set(re.findall(r"--[a-z0-9-]+", text))
    expected = {"--model", "--data", "--algorithm", "--lr", "--steps", "--eval-steps", "--out", "--seed",
                "--trust-remote-code", "--no-trust-remote-code", "--workers", "--cpus-per-worker",
                "--gpus-per-worker", "--zero", "--offload", "--no-offload", "--precision", "--batch-size",
                "--max-length"}
    assert expected <= flags
    assert {_flag(n) for n in _fields(UnlearnJob, ("params", "lora", "wait_steps"))} <= flags
    assert "--params" not in flags and "--r" not in flags and "--target-modules" not in flags
    assert "one of auto, fp32, bf16" in text and "one of 0, 2, 3" in text  # Literal choices listed in the help
    assert "--lora r=8 alpha=16" in text and set(LoraConfig.model_fields) == {"r", "alpha", "dropout", "target_modules"}


@pytest.mark.usefixtures("no_console")
@pytest.mark.usefixtures("no_input_checks")
def test_eval_flags_build_the_eval_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Every EvalConfig field set from its flag reaches the evaluation as the typed value; unset ones keep the
    model's defaults (flags default to "not given")."""
    import lume_ray.evaluate.runner
    import lume_ray.local_ray

    seen: list[EvalConfig] = []

    def fake_evaluate(model: str, data: str, settings: EvalConfig, **kw: Any) -> dict[str, Any]:
        seen.append(settings)
        return {"seconds": 0.0, "settings": settings.model_dump(mode="json")}

    monkeypatch.setattr(lume_ray.evaluate.runner, "evaluate", fake_evaluate)
    monkeypatch.setattr(lume_ray.local_ray, "ray_session", lambda **kw: nullcontext(False))
    base = ["eval", "--model", "m", "--data", "d", "--out", str(tmp_path / "o"), "--json"]
    assert main(base) == 0
    assert seen[-1] == EvalConfig()
    given = {"max_new_tokens": ("8", 8), "batch_size": ("4", 4), "workers": ("2", 2), "cpus_per_actor": ("0.5", 0.5),
             "gpus_per_actor": ("1", 1.0), "limit": ("3", 3), "dtype": ("bfloat16", "bfloat16"),
             "mia_k": ("0.1", 0.1), "utility_style": ("option", "option"), "mmlu_shots": ("0", 0)}
    argv = [a for name, (text, _) in given.items() for a in (_flag(name), text)]
    assert main([*base, *argv, "--exact", "--utility-floor", "{absolute: 0.371}"]) == 0
    settings = seen[-1]
    for name, (_, value) in given.items():
        assert getattr(settings, name) == value, name
    assert settings.exact is True
    assert (settings.utility_floor.relative, settings.utility_floor.absolute) == (None, 0.371)
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.rindex('{\n  "seconds"'):])["settings"]["limit"] == 3  # --json: metrics.json
    untouched = set(EvalConfig.model_fields) - set(given) - {"exact", "utility_floor"}
    for name in untouched:
        assert getattr(settings, name) == getattr(EvalConfig(), name), name


@pytest.mark.parametrize(("argv", "pattern"), [
    (["eval", "--batch-size", "0"], r"--batch-size: Input should be greater than or equal to 1 \(got '0'\)"),
    (["eval", "--mia-k", "2"], r"--mia-k: Input should be less than or equal to 1 \(got '2'\)"),
    (["eval", "--dtype", "fp8"], r"--dtype: Input should be 'float32', 'bfloat16' or 'float16' \(got 'fp8'\)"),
    (["eval", "--utility-floor", "{rel: 0.5}"], r"--utility-floor: unknown key 'rel' \(valid: relative, absolute\)"),
    (["eval", "--workers", "many"], r"--workers: Input should be a valid integer"),
    (["unlearn", "--workers", "0"], r"--workers: Input should be greater than or equal to 1 \(got '0'\)"),
    (["unlearn", "--cpus-per-worker", "0"], r"--cpus-per-worker: Input should be greater than 0"),
    (["unlearn", "--max-length", "4"], r"--max-length: Input should be greater than or equal to 8"),
    (["unlearn", "--seed", "-1"], r"--seed: Input should be greater than or equal to 0"),
    (["data", "synth", "OUT", "--docs-per-task", "1"], r"--docs-per-task: Input should be greater than or equal to 2"),
    (["target", "build", "OUT", "--data", "d", "--preset", "huge"], r"--preset: unknown preset 'huge' \(valid: "),
    (["target", "build", "OUT", "--data", "d", "--epochs", "0"], r"--epochs: Input should be greater than or equal to 1"),
])
def test_a_field_error_names_its_flag(argv: list[str], pattern: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    required = {"unlearn": ["--model", "m", "--data", "d", "--algorithm", "ga", "--out", str(tmp_path / "o")],
                "eval": ["--model", "m", "--data", "d", "--out", str(tmp_path / "o")]}.get(argv[0], [])
    argv = [str(tmp_path / "OUT") if a == "OUT" else a for a in argv]
    capsys.readouterr()
    assert main([*argv, *required]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lume-ray: error: lume-ray "), err
    assert re.search(pattern, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_add_model_options_makes_a_flag_of_a_new_field() -> None:
    """What "a field added there is a flag here" means: every kind of field a config model uses."""
    from typing import Literal

    class Inner(BaseModel):
        depth: int = Field(2, ge=1, description="how deep")

    class Toy(BaseModel):
        name: str = Field(..., description="required")
        rate: float = Field(0.5, description="a rate in %")
        mode: Literal["a", "b"] = "a"
        fast: bool = False
        sizes: tuple[int, ...] = ()
        inner: Inner = Inner()

    parser = Parser(prog="lume-ray toy")
    flags = add_model_options(parser, Toy)
    assert flags == {"name": "--name", "rate": "--rate", "mode": "--mode", "fast": "--fast", "sizes": "--sizes",
                     "inner.depth": "--depth"}
    args = parser.parse_args(["--name", "x", "--no-fast", "--sizes", "[1, 2]", "--depth", "3"])
    from lume_ray.cli_options import nested as _nested

    raw = _nested(args, flags)
    assert raw == {"name": "x", "fast": False, "sizes": [1, 2], "inner": {"depth": "3"}}  # only what was typed
    toy = Toy.model_validate(raw)
    assert (toy.rate, toy.mode, toy.sizes, toy.inner.depth) == (0.5, "a", (1, 2), 3)
    text = " ".join(parser.format_help().split())
    assert "a rate in % (default: 0.5)" in text and "one of a, b" in text and "how deep (default: 2)" in text
    with pytest.raises(SystemExit):
        parser.parse_args([])  # --name is required


@pytest.mark.parametrize("command", [["sweep", "exp.yaml"], ["quickstart"],
                                     ["submit", "exp.yaml", "--address", "http://127.0.0.1:8265"]])
def test_a_repeated_set_keeps_every_override(command: list[str]) -> None:
    from lume_ray.cli import build_parser

    args = build_parser().parse_args([*command, "--set", "a=1", "b=2", "--set", "c=3"])
    assert args.overrides == [("a", "1"), ("b", "2"), ("c", "3")]  # argparse's plain nargs kept only the last --set
    unlearn = build_parser().parse_args(["unlearn", "--model", "m", "--data", "d", "--algorithm", "npo", "--out", "o",
                                         "--set", "beta=0.1", "--set", "alpha=2"])
    assert unlearn.params == [("beta", "0.1"), ("alpha", "2")]
