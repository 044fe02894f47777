"""The shipped kernel's own inputs (#29's second sweep): each malformed one is a single line before any work.

A KERNEL_* setting that is not a number, a switch other than on or off, a wheels manifest that is a list or
names no package, a model marker that is not JSON or holds an impossible size, a checkpoint swapped after
`make kernel` wrote the marker, and the dry run's own settings and error line. These ran as tracebacks (the
entry script caught only its own error type), or ran on to "valid" with another checkpoint's weights.
"""

import json

import pytest

from solution.kernel import entry
from solution.kernel.contract import KernelError
from tests.kernel.test_entry import MANIFEST


@pytest.mark.parametrize(("env", "culprit"), [
    ({"KERNEL_TIME_LIMIT_S": "abc"}, "KERNEL_TIME_LIMIT_S='abc' is not a number above 0"),
    ({"KERNEL_TIME_LIMIT_S": "-5"}, "KERNEL_TIME_LIMIT_S='-5'"),
    ({"KERNEL_TIME_LIMIT_S": "inf"}, "KERNEL_TIME_LIMIT_S='inf'"),
    ({"KERNEL_PUBLIC_MAX": "abc"}, "KERNEL_PUBLIC_MAX='abc' is not a whole number"),
    ({"KERNEL_STARTED_AT": "yesterday"}, "KERNEL_STARTED_AT='yesterday'"),
    ({"KERNEL_FULL": "maybe"}, "KERNEL_FULL='maybe' is not a switch"),
])
def test_a_malformed_kernel_setting_is_one_line_before_any_work(tmp_path, monkeypatch, env, culprit):
    """#29: these were tracebacks (entry.py catches only the kernel's own error)."""
    from solution.kernel import run

    monkeypatch.setattr(run, "run", lambda *a, **k: pytest.fail("nothing may run"))
    with pytest.raises(KernelError) as info:
        run.run_from_env(tmp_path, tmp_path, env)
    assert culprit in str(info.value) and "\n" not in str(info.value)


def test_kernel_full_false_means_off():
    from solution.kernel.run import env_flag

    assert [env_flag({"KERNEL_FULL": v}, "KERNEL_FULL") for v in ("false", "0", "", "no", "1", "true", "YES")] == \
        [False, False, False, False, True, True, True]
    assert env_flag({}, "KERNEL_FULL") is False


@pytest.mark.parametrize(("manifest", "culprit"), [
    ([1, 2], "holds a JSON list"),
    ({k: v for k, v in MANIFEST.items() if k != "package"}, "names no package"),
    ({**MANIFEST, "files": "remap.whl"}, "malformed 'files'"),
    ({**MANIFEST, "faiss": ["gpu"]}, "malformed 'faiss'"),
])
def test_a_malformed_wheels_manifest_is_one_line(tmp_path, manifest, culprit):
    """#29: a manifest that is a list or lacks `package` was a traceback."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / entry.WHEELS_MANIFEST).write_text(json.dumps(manifest))
    for name in MANIFEST["files"]:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(KernelError, match=culprit) as info:
        entry.check_manifest(tmp_path)
    assert "make kernel" in str(info.value) and "\n" not in str(info.value)


def test_the_model_marker_is_checked_before_it_is_trusted(tmp_path):
    """#29: a marker that is not JSON or has image_size -5 was a traceback; a swapped checkpoint.pt ran to
    'valid' (its sha256 was never compared)."""
    from solution.kernel.contract import MODEL_MARKER, sha256
    from solution.kernel.run import read_model_marker

    (tmp_path / "checkpoint.pt").write_bytes(b"weights")
    good = {"shipped_sha256": sha256(tmp_path / "checkpoint.pt"), "infer": {"image_size": 512}}
    marker = tmp_path / MODEL_MARKER
    marker.write_text(json.dumps(good))
    assert read_model_marker(tmp_path) == good
    for text, culprit in [("{oops", "cannot be read as JSON"), ("[1]", "holds a JSON list"),
                          (json.dumps({**good, "infer": {"image_size": -5}}), "'infer.image_size' must be")]:
        marker.write_text(text)
        with pytest.raises(KernelError, match=culprit) as info:
            read_model_marker(tmp_path)
        assert "make kernel" in str(info.value) and "\n" not in str(info.value)
    marker.write_text(json.dumps(good))
    (tmp_path / "checkpoint.pt").write_bytes(b"another run's weights")
    with pytest.raises(KernelError, match="is not the checkpoint"):
        read_model_marker(tmp_path)


def test_the_dry_run_passes_kernel_settings_and_prints_one_error_line(tmp_path, monkeypatch, capsys):
    """#29: the dry run dropped every KERNEL_* variable, and a failed kernel gave two `error:` lines."""
    import subprocess

    from solution.cli import main
    from solution.kernel import simulate

    kaggle = tmp_path / "kaggle"
    (kaggle / "kernel").mkdir(parents=True)
    (kaggle / "kernel" / "entry.py").write_text("")
    seen = {}
    monkeypatch.setattr(simulate, "mount", lambda *a, **k: tmp_path / "input")
    monkeypatch.setattr(simulate, "notebook_python", lambda folder: ("python", {}, None))

    def fake_entry(python, env, entry_py, root, working, settings, capture=True, timeout=None):
        seen.update(settings)
        print("error: the kernel's own line", file=__import__("sys").stderr)
        return subprocess.CompletedProcess([], 2)

    monkeypatch.setattr(simulate, "run_entry", fake_entry)
    monkeypatch.setenv("KERNEL_TIME_LIMIT_S", "1234")
    monkeypatch.setenv("KERNEL_PUBLIC_INDEX", "50")
    code = main(["kernel-dryrun", "--config", "toy-tiny", "--kaggle", str(kaggle), "--work", str(tmp_path / "dry"),
                 "--full"])
    assert code == 2
    assert seen["KERNEL_TIME_LIMIT_S"] == "1234" and seen["KERNEL_PUBLIC_INDEX"] == "50" and seen["KERNEL_FULL"] == "1"
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "exited 2" in err
