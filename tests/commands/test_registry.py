"""The stage registry: each stage declared once, beside its function; the shared options added once."""

from solution.cli import build_parser
from solution.commands import STAGES


def test_every_stage_is_a_cmd_function_of_a_commands_module():
    assert len(STAGES) >= 20
    for name, spec in STAGES.items():
        assert spec.func.__name__ == "cmd_" + name.replace("-", "_"), name
        assert spec.func.__module__.startswith("solution.commands."), name


def test_shared_options_are_declared_once_by_the_parser():
    for name, spec in STAGES.items():
        flags = [flag for names, _ in spec.arguments for flag in names]
        assert "--debug" not in flags and "-v" not in flags, name
        assert "overrides" not in flags, name
        assert "--config" not in flags, name  # every stage with a config takes it, and key=value, the same way
    parser = build_parser()
    stages = next(a for a in parser._actions if a.dest == "command").choices
    assert list(stages) == list(STAGES)
    for name in ("train", "submit", "kernel", "bench", "gpu-check"):
        for argv in ([name, "--debug"], ["--debug", name]):  # --debug before or after the stage's name
            args = parser.parse_args(argv)
            assert args.func is STAGES[name].func and args.debug is True, argv
        args = parser.parse_args([name])
        assert args.debug is False
        assert getattr(args, "config", "none") == (STAGES[name].config_default if STAGES[name].config else
                                                   "none")
