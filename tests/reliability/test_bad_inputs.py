"""Bad inputs and faults, table-driven, through the real CLI (``solution.cli.main``, what ``python -m solution``
runs). Each case asserts the exit code, the number of ``error:`` lines (one, or none where the input is
accepted), that no traceback escaped, and that no file written before the command changed.

The table in ``docs/reliability.md`` is checked against CASES (``test_docs_table_matches_the_suite``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from solution.cli import main
from solution.data.gldv2 import image_path, read_ids

REPO = Path(__file__).resolve().parents[2]
TINY = ["--config", "toy-tiny", "run.workers=0", "train.epochs=1", "train.tuples_per_epoch=4",
        "train.tuples_per_step=2", "train.val_landmarks=0", "train.eval_before=false"]


@dataclass
class Case:
    name: str
    category: str
    prepare: Callable  # (Ctx) -> argv
    code: int = 2
    message: str = ""  # in the error line (or in stdout when the command succeeds)
    errors: int = 1  # `error:` lines expected
    patch: Callable | None = None  # (monkeypatch, Ctx): a fault injected where the real one cannot be made
    env: dict | None = None  # environment variables for the command
    check: Callable | None = None  # (Ctx): what must hold afterwards, beyond the common assertions
    rewrites: bool = False  # the command may rewrite caches it refused to trust (features, ranking)


class Ctx:
    """A case's sandbox: a copy of the tiny competition and of a trained run, made on demand."""

    def __init__(self, tmp: Path, tiny_root: Path, trained: Path):
        self.tmp, self.tiny_root, self.trained = tmp, tiny_root, trained
        self._data = None
        self._runs = None

    @property
    def data(self) -> Path:
        """A data root whose ``toy/`` is this case's own copy."""
        if self._data is None:
            self._data = self.tmp / "inputs"
            shutil.copytree(self.tiny_root / "toy", self._data / "toy")
        return self._data

    @property
    def runs(self) -> Path:
        """A run.dir holding a copy of the trained tiny run."""
        if self._runs is None:
            self._runs = self.tmp / "runs"
            shutil.copytree(self.trained, self._runs / "toy-tiny")
        return self._runs

    def args(self, *extra: str, data: bool = False) -> list[str]:
        root = self.data if data else self.tiny_root
        return [*TINY, f"data.root={root}", f"run.dir={self.runs}", *extra]

    def write(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def submission(self, name="s.csv", header="id,images", rows=None) -> Path:
        test_ids, index_ids = read_ids(self.tiny_root / "toy/test.csv"), read_ids(self.tiny_root / "toy/index.csv")
        rows = rows if rows is not None else [f"{t},{' '.join(index_ids[:3])}" for t in test_ids]
        text = "\n".join([header, *rows]) + "\n"
        if name.endswith(".gz"):
            return self.write(name, gzip.compress(text.encode()))
        return self.write(name, text)

    def checkpoint(self) -> Path:
        return self.runs / "toy-tiny" / "checkpoint.pt"


def _validate(ctx, path, *extra):
    return ["validate", "--data-root", str(ctx.tiny_root), str(path), *extra]


def _evaluate(ctx, path, *extra):
    return ["evaluate", "--data-root", str(ctx.tiny_root), "--submission", str(path), *extra]


def _truncated_gz(ctx):
    data = ctx.submission("s.csv.gz").read_bytes()
    return _validate(ctx, ctx.write("t.csv.gz", data[: len(data) // 2]))


def _bitflipped_gz(ctx):
    data = bytearray(ctx.submission("s.csv.gz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    return _evaluate(ctx, ctx.write("f.csv.gz", bytes(data)))


def _edit_csv(ctx, name, edit):
    path = ctx.data / "toy" / name
    path.write_text(edit(path.read_text()))
    return path


def _train_clean_bad_id(ctx):
    _edit_csv(ctx, "train_clean.csv", lambda t: t.replace(t.splitlines()[1].split(",")[1].split()[0], "xyz", 1))
    return ["train", *ctx.args("run.name=fresh", data=True)]


def _train_clean_empty_field(ctx):
    _edit_csv(ctx, "train_clean.csv", lambda t: t.replace(t.splitlines()[1], t.splitlines()[1].split(",")[0] + ",", 1))
    return ["train", *ctx.args("run.name=fresh", data=True)]


def _duplicate_index_id(ctx):
    _edit_csv(ctx, "index.csv", lambda t: t + t.splitlines()[1] + "\n")
    return ["validate", "--data-root", str(ctx.data), str(ctx.submission())]


def _empty_index_csv(ctx):
    (ctx.data / "toy/index.csv").write_text("")
    return ["validate", "--data-root", str(ctx.data), str(ctx.submission())]


def _ragged_csv(ctx):
    (ctx.data / "toy/test.csv").write_text('id\n"unterminated,quote\n0123456789abcdef,extra,fields\n')
    return ["validate", "--data-root", str(ctx.data), str(ctx.submission())]


def _missing_csv(ctx):
    (ctx.data / "toy/test.csv").unlink()
    return ["validate", "--data-root", str(ctx.data), str(ctx.submission())]


def _missing_image(ctx):
    image_path(ctx.data / "toy", "index", read_ids(ctx.data / "toy/index.csv")[0]).unlink()
    return ["extract", *ctx.args(data=True), "--split", "index"]


def _corrupt_jpeg(ctx):
    image_path(ctx.data / "toy", "index", read_ids(ctx.data / "toy/index.csv")[0]).write_bytes(b"\xff\xd8\xffjunk")
    return ["extract", *ctx.args(data=True), "--split", "index"]


def _bomb_png(ctx):
    # a 200-megapixel PNG saved under the .jpg name (PIL reads by content): PIL refuses to open it
    Image.new("1", (20000, 10000)).save(image_path(ctx.data / "toy", "test", read_ids(ctx.data / "toy/test.csv")[0]),
                                        "PNG")
    return ["extract", *ctx.args(data=True), "--split", "test"]


def _duplicated_rows(ctx):
    text = ctx.submission().read_text()
    return ctx.write("dup.csv", text + text.splitlines()[1] + "\n")


def _checkpoint_bytes(make):
    def prepare(ctx):
        path = ctx.checkpoint()
        path.write_bytes(make(path.read_bytes()))
        return ["submit", *ctx.args(), "--out", str(ctx.tmp / "sub")]
    return prepare


def _state_dict_only(ctx):
    state = torch.load(ctx.checkpoint(), weights_only=True)["state_dict"]
    torch.save(state, ctx.checkpoint())
    return ["submit", *ctx.args(), "--out", str(ctx.tmp / "sub")]


def _truncated_pretrained(ctx):
    data = ctx.checkpoint().read_bytes()
    weights = ctx.write("weights.pt", data[: len(data) // 3])
    return ["train", *ctx.args("model.pretrained=file", f"model.pretrained_file={weights}", "run.name=fresh")]


def _own_checkpoint_as_pretrained(ctx):
    return ["train", *ctx.args("model.pretrained=file", f"model.pretrained_file={ctx.checkpoint()}",
                               "run.name=from-own")]


def _out_is_a_file(ctx):
    return ["submit", *ctx.args(), "--out", str(ctx.write("taken", "x"))]


def _run_dir_is_a_file(ctx):
    return ["train", *TINY, f"data.root={ctx.tiny_root}", f"run.dir={ctx.write('runsfile', 'x')}"]


def _config_file(content: bytes):
    def prepare(ctx):
        return ["train", "--config", str(ctx.write("bad.yaml", content)), f"run.dir={ctx.runs}"]
    return prepare


def _pickle(ctx, payload: bytes):
    folder = ctx.tmp / "revisitop" / "roxford5k"
    (folder / "jpg").mkdir(parents=True)
    (folder / "gnd_roxford5k.pkl").write_bytes(payload)
    return ["evaluate-revisitop", *ctx.args(), "--dataset", "roxford5k", "--root", str(ctx.tmp / "revisitop")]


class _System:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _kaggle(ctx, *extra, token: str | None = None):
    ctx.kaggle_env = {"KAGGLE_CONFIG_DIR": str(ctx.tmp / "kaggle"), "HOME": str(ctx.tmp / "home")}
    (ctx.tmp / "kaggle").mkdir()
    if token is not None:
        (ctx.tmp / "kaggle" / "kaggle.json").write_text(token)
    return ["kaggle", "submit", *extra]


def _changed_model(ctx):
    return ["train", *ctx.args("model.head=mac")]


def _submit(ctx, *extra):
    return ["submit", *ctx.args(*extra), "--out", str(ctx.tmp / "sub")]


def _features(ctx, *extra) -> Path:
    """Submit once (in the case's preparation), so the run holds merged features; their split folder."""
    assert main(_submit(ctx, *extra)) == 0
    return next((ctx.runs / "toy-tiny" / "features").glob("*/test"))


def _other_scales_extract_again(ctx):
    _features(ctx, "infer.scales=[1,2]")
    ctx.tags_before = {p.name for p in (ctx.runs / "toy-tiny" / "features").iterdir()}
    for own in ("ranking.npz", "submit.json"):  # the second submit writes its own
        (ctx.runs / "toy-tiny" / own).unlink()
    return ["submit", *ctx.args("infer.scales=[0.5,1]"), "--out", str(ctx.tmp / "second")]


def _new_features_folder(ctx):
    tags = {p.name for p in (ctx.runs / "toy-tiny" / "features").iterdir()}
    assert len(tags - ctx.tags_before) == 1, (tags, ctx.tags_before)  # extracted again, not reused


def _damaged_merged(make):
    def prepare(ctx):
        merged = _features(ctx).parent / "test.npy"
        np.save(merged, make(np.load(merged)))
        return _submit(ctx)
    return prepare


def _truncated_shard(ctx):
    folder = _features(ctx)
    (folder.parent / "test.npy").unlink()
    part = folder / "part-00000.npy"
    part.write_bytes(part.read_bytes()[:64])
    return _submit(ctx)


def _garbage_ranking(ctx):
    (ctx.runs / "toy-tiny" / "ranking.npz").write_bytes(b"PK\x03\x04 not a zip")
    return ["viz", "retrieval", *ctx.args()]


def _other_test_set_ranking(ctx):
    from solution.infer.submit import save_ranking

    save_ranking(ctx.runs / "toy-tiny" / "ranking.npz", ["q1", "q2", "q3"], ["i1"], np.zeros((3, 1), np.int64),
                 np.zeros((3, 1), np.float32), {"features": "elsewhere"})
    return ["viz", "retrieval", *ctx.args()]


def _earlier_checkpoint_ranking(ctx):
    """#29: ranking.npz's provenance was recorded but never compared with the run's checkpoint."""
    from solution.data.gldv2 import read_ids
    from solution.infer.submit import save_ranking

    test = read_ids(ctx.tiny_root / "toy" / "test.csv")
    save_ranking(ctx.runs / "toy-tiny" / "ranking.npz", test, ["i1"], np.zeros((len(test), 1), np.int64),
                 np.zeros((len(test), 1), np.float32), {"checkpoint": "1-0", "features": "x", "steps": []})
    return ["viz", "retrieval", *ctx.args()]


def _members(value: str):
    return lambda c: _submit(c, f"ensemble.members={value}")


def _owned_build(ctx) -> Path:
    """A folder as an earlier `make kernel` left it: marked as ours, holding a model."""
    out = ctx.tmp / "kaggle"
    (out / "model").mkdir(parents=True)
    (out / "model" / "checkpoint.pt").write_bytes(b"the last good build")
    (out / ".made-by-remap-landmarks").write_text("built\n")
    return out


def _kernel(ctx, *extra, checkpoint: Path | None = None):
    return ["kernel", f"run.dir={ctx.runs}", "--checkpoint", str(checkpoint or ctx.checkpoint()), "--no-download",
            *extra]


def _users_folder(ctx):
    (ctx.tmp / "mine" / "model").mkdir(parents=True)
    (ctx.tmp / "mine" / "model" / "notes.txt").write_text("a user's own file")
    return _kernel(ctx, "--out", str(ctx.tmp / "mine"))


def _failed_rebuild(ctx):
    out = _owned_build(ctx)
    return ["kernel", f"run.dir={ctx.runs}", "--checkpoint", str(ctx.checkpoint()), "--out", str(out),
            "--python-version", "2.7"]


def _dryrun_work_not_ours(ctx):
    kaggle = _owned_build(ctx)
    (kaggle / "kernel").mkdir()
    (kaggle / "kernel" / "entry.py").write_text("")
    (ctx.tmp / "runs-like" / "a-run").mkdir(parents=True)
    (ctx.tmp / "runs-like" / "a-run" / "checkpoint.pt").write_bytes(b"weeks of training")
    return ["kernel-dryrun", *ctx.args(), "--kaggle", str(kaggle), "--work", str(ctx.tmp / "runs-like")]


def _dryrun_too_many_test_images(ctx):
    """#29: `--test-images 100000000` copied until the disk was full."""
    kaggle = _owned_build(ctx)
    (kaggle / "kernel").mkdir()
    (kaggle / "kernel" / "entry.py").write_text("")
    return ["kernel-dryrun", *ctx.args(data=True), "--kaggle", str(kaggle), "--work", str(ctx.tmp / "dry"),
            "--test-images", "100000000000"]


def _state_dict_bytes(ctx) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(torch.load(ctx.checkpoint(), weights_only=True)["state_dict"], buffer)
    return buffer.getvalue()


def _nan_checkpoint(ctx) -> bytes:
    import io

    payload = torch.load(ctx.checkpoint(), weights_only=True)
    payload["state_dict"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _kernel_checkpoint(make):
    def prepare(ctx):
        return _kernel(ctx, "--out", str(ctx.tmp / "k"), checkpoint=ctx.write("bad.pt", make(ctx)))
    return prepare


def _pickled_checkpoint(ctx):
    return pickle.dumps({"meta": _System(), "state_dict": {}})


def _os_fault(errno_code: int, where: str):
    """A patch that makes the first shard write (or the submission's write check) fail with ``errno_code``."""
    def patch(monkeypatch, ctx):
        import errno as errno_module  # noqa: F401  (names the codes in the failure's message)

        def fail(*args, **kwargs):
            raise OSError(errno_code, os.strerror(errno_code), str(ctx.tmp / where))
        if where == "shard":
            monkeypatch.setattr("solution.infer.features._write_shard", fail)
        else:
            monkeypatch.setattr("tempfile.NamedTemporaryFile", fail)
    return patch


def _spill_dir_is_a_file(ctx):
    return _submit(ctx, f"infer.index.spill_dir={ctx.write('spill', 'x')}", "infer.dba.enabled=true")


def _kaggle_folder(ctx, kernel_meta: str | None, dataset_meta: str | None = '{"id": "me/d", "title": "d"}'):
    folder = ctx.tmp / "kaggle-out"
    (folder / "kernel").mkdir(parents=True)
    (folder / "model").mkdir()
    if kernel_meta is not None:
        (folder / "kernel" / "kernel-metadata.json").write_text(kernel_meta)
    if dataset_meta is not None:
        (folder / "model" / "dataset-metadata.json").write_text(dataset_meta)
    return ["kaggle", "push", "--dir", str(folder)]


def _no_network(monkeypatch, ctx):
    import requests

    def refuse():
        raise requests.ConnectionError("HTTPSConnectionPool(host='www.kaggle.com'): Max retries exceeded "
                                       "(Caused by NameResolutionError)")
    monkeypatch.setattr("solution.kaggle_api._make_client", refuse)


def _token_file(ctx):
    (ctx.tmp / "home" / ".kaggle").mkdir(parents=True)
    (ctx.tmp / "home" / ".kaggle" / "access_token").write_bytes(b"\xff\xfe\x00token")
    return ["kaggle", "submit", "--kernel", "me/nb", "--version", "1"]


def _lock_held(ctx):
    import fcntl

    lock = ctx.runs / "toy-tiny" / ".lock"
    ctx.lock_handle = open(lock, "a+")  # another writer: a separate open file, as another process's
    fcntl.flock(ctx.lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return ["train", *ctx.args("train.epochs=2")]


def _swallowed_interrupt(monkeypatch, ctx):
    """SIGINT where Python swallows the KeyboardInterrupt (as at a DataLoader worker's fork): the command goes
    on, and must still end as interrupted."""
    import signal

    from solution.infer import submit as module

    real = module.write_submission

    def interrupted(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass  # "Exception ignored in ...": what CPython does inside an at-fork handler or a __del__
        return real(*args, **kwargs)
    monkeypatch.setattr(module, "write_submission", interrupted)


def _header_only_test_csv(ctx):
    (ctx.data / "toy/test.csv").write_text("id\n")
    return ["submit", *ctx.args(data=True), "--out", str(ctx.tmp / "sub")]


def _tiny_ivfpq(ctx):
    return _submit(ctx, "infer.index.type=ivfpq")


CASES = [
    # configuration: unknown keys, bad values, files
    Case("unknown key", "config", lambda c: ["train", *c.args("train.epoch=2")], message="did you mean 'train.epochs'"),
    Case("non-UTF-8 config file", "config", _config_file(b"train:\n  epochs: \xff\xfe\n"), message="not UTF-8"),
    Case("invalid YAML", "config", _config_file(b"train: [unclosed\n"), message="not valid YAML"),
    Case("missing config file", "config", lambda c: ["train", "--config", str(c.tmp / "nope.yaml")],
         message="does not exist"),
    Case("image_size=0", "config", lambda c: ["train", *c.args("train.image_size=0")], message="train.image_size"),
    Case("tuples_per_step=0", "config", lambda c: ["train", *c.args("train.tuples_per_step=0")],
         message="train.tuples_per_step"),
    Case("the old per-rank batch_tuples", "config", lambda c: ["train", *c.args("train.batch_tuples=2")],
         message="train.tuples_per_step (the tuples of one optimiser step over all ranks"),
    Case("infer.batch_size=0", "config", lambda c: ["submit", *c.args("infer.batch_size=0")],
         message="infer.batch_size"),
    Case("infer.scales=[abc]", "config", lambda c: ["submit", *c.args("infer.scales=[abc]")], message="infer.scales"),
    Case("run.device=banana", "config", lambda c: ["train", *c.args("run.device=banana")], message="run.device"),
    Case("run.device=cuda without a GPU", "config", lambda c: ["submit", *c.args("run.device=cuda")],
         message="no CUDA device"),
    Case("train.epochs=-1", "config", lambda c: ["train", *c.args("train.epochs=-1")], message="train.epochs"),
    Case("train.lr=-1", "config", lambda c: ["train", *c.args("train.lr=-1")], message="train.lr"),
    Case("whitening wider than the head", "config",
         lambda c: ["train", *c.args("model.whiten_dim=100000", "run.name=wide")], message="whiten_dim"),
    Case("changed model on resume", "config", _changed_model, message="model.head"),
    # command-line arguments
    Case("--shard abc", "arguments", lambda c: ["extract", *c.args(), "--shard", "abc"], message="want i/n"),
    Case("--shard 1", "arguments", lambda c: ["extract", *c.args(), "--shard", "1"], message="want i/n"),
    Case("--shard 3/2", "arguments", lambda c: ["extract", *c.args(), "--shard", "3/2"], message="0 <= i < n"),
    Case("export --size abc", "arguments", lambda c: ["export", *c.args(), "--size", "abc"], message="want HxW"),
    Case("export --size 0x64", "arguments", lambda c: ["export", *c.args(), "--size", "0x64"],
         message="32 to 4096 pixels"),
    # CSV files: competition files and submissions
    Case("truncated .csv.gz (validate)", "csv", _truncated_gz, message="not a readable CSV"),
    Case("bit-flipped .csv.gz (evaluate)", "csv", _bitflipped_gz, message="not a readable CSV"),
    Case("0-byte index.csv", "csv", _empty_index_csv, message="is empty"),
    Case("ragged test.csv", "csv", _ragged_csv, message="test.csv"),
    Case("missing test.csv", "csv", _missing_csv, message="does not exist"),
    Case("duplicate id in index.csv", "csv", _duplicate_index_id, message="more than once"),
    Case("bad id in train_clean.csv", "csv", _train_clean_bad_id, message="malformed id 'xyz'"),
    Case("empty field in train_clean.csv", "csv", _train_clean_empty_field, message="lists no images"),
    Case("submission with a byte-order mark", "csv",
         lambda c: _validate(c, c.write("bom.csv", b"\xef\xbb\xbf" + c.submission().read_bytes())), code=0, errors=0,
         message="valid:"),
    Case("evaluate a wrong header", "csv", lambda c: _evaluate(c, c.submission(header="id,predictions")), code=1,
         message="not a valid submission"),
    Case("evaluate 101 predictions", "csv",
         lambda c: _evaluate(c, c.submission(rows=[f"{t},{' '.join([read_ids(c.tiny_root / 'toy/index.csv')[0]] * 101)}"
                                                   for t in read_ids(c.tiny_root / "toy/test.csv")])),
         code=1, message="not a valid submission"),
    Case("evaluate duplicate rows", "csv", lambda c: _evaluate(c, _duplicated_rows(c)), code=1,
         message="not a valid submission"),
    Case("evaluate --force scores it anyway", "csv",
         lambda c: _evaluate(c, c.submission(header="id,predictions"), "--force"), code=0, errors=0,
         message="mAP@100"),
    # images
    Case("listed image missing", "images", _missing_image, message="listed in"),
    Case("corrupt JPEG: skipped and counted", "images", _corrupt_jpeg, code=0, errors=0, message="1 unreadable"),
    Case("decompression bomb: skipped and counted", "images", _bomb_png, code=0, errors=0, message="1 unreadable"),
    # checkpoints and weights
    Case("missing checkpoint", "checkpoints",
         lambda c: ["submit", *c.args("run.name=never-trained"), "--out", str(c.tmp / "sub")], message="make train"),
    Case("truncated checkpoint", "checkpoints", _checkpoint_bytes(lambda b: b[: len(b) // 2]),
         message="not a readable PyTorch file"),
    Case("random bytes as checkpoint", "checkpoints",
         _checkpoint_bytes(lambda b: np.random.default_rng(0).bytes(4096)),
         message="not a readable PyTorch file"),
    Case("empty checkpoint", "checkpoints", _checkpoint_bytes(lambda b: b""), message="not a readable PyTorch file"),
    Case("state-dict-only checkpoint", "checkpoints", _state_dict_only, message="not a checkpoint written by"),
    Case("truncated pretrained_file", "checkpoints", _truncated_pretrained, message="model.pretrained_file"),
    Case("own checkpoint as pretrained_file", "checkpoints", _own_checkpoint_as_pretrained, code=0, errors=0,
         message="train: trained"),
    # outputs
    Case("submit --out is a file (checked first)", "outputs", _out_is_a_file, message="is a file"),
    Case("run.dir is a file", "outputs", _run_dir_is_a_file, message="is a file"),
    # pickles
    Case("truncated .pkl", "pickles", lambda c: _pickle(c, pickle.dumps({"imlist": list("abcdef")})[:20]),
         message="not a readable pickle"),
    Case("os.system in a .pkl", "pickles", lambda c: _pickle(c, pickle.dumps({"imlist": _System()})),
         message="refusing to load"),
    # Kaggle
    Case("no Kaggle credentials", "kaggle", lambda c: _kaggle(c, "--kernel", "me/nb", "--version", "1"),
         message="no Kaggle credentials"),
    Case("kaggle.json is not JSON", "kaggle", lambda c: _kaggle(c, "--kernel", "me/nb", "--version", "1", token="{"),
         message="not valid JSON"),
    Case("kaggle.json without a key", "kaggle",
         lambda c: _kaggle(c, "--kernel", "me/nb", "--version", "1", token='{"username": "me"}'),
         message='lacks "username" and "key"'),
    Case("kernel submission without --version", "kaggle", lambda c: ["kaggle", "submit", "--kernel", "me/nb"],
         message="--version N"),
    Case("kernel-metadata.json is not JSON", "kaggle", lambda c: _kaggle_folder(c, "{"), message="not valid JSON"),
    Case("kernel-metadata.json without dataset_sources", "kaggle",
         lambda c: _kaggle_folder(c, '{"id": "me/k", "code_file": "entry.py"}'), message="'dataset_sources'"),
    Case("dataset-metadata.json without an id", "kaggle",
         lambda c: _kaggle_folder(c, '{"id": "me/k", "code_file": "entry.py", "dataset_sources": []}', "[]"),
         message="lacks 'id'"),
    Case("KAGGLE_API_TOKEN set, no network", "kaggle", lambda c: ["kaggle", "submit", "--kernel", "me/nb",
                                                                  "--version", "1"],
         env={"KAGGLE_API_TOKEN": "KGAT_secret_value"}, patch=_no_network, message="authenticating with Kaggle"),
    Case("access_token that is not UTF-8", "kaggle", _token_file, message="not a readable UTF-8 token"),
    # cached artefacts: keyed by every setting, checked before use
    Case("other scale values extract again", "caches", _other_scales_extract_again, code=0, errors=0,
         message="submit: wrote", check=_new_features_folder),
    Case("merged features of dtype int64", "caches", _damaged_merged(lambda a: a.astype(np.int64)),
         message="int64 array"),
    Case("merged features of dtype float64", "caches", _damaged_merged(lambda a: a.astype(np.float64)),
         message="float64 array"),
    Case("merged features of another dimension", "caches", _damaged_merged(lambda a: a[:, :5]),
         message="x 5 float16 array"),
    Case("truncated shard", "caches", _truncated_shard, message="part-00000.npy is not a readable .npy"),
    Case("garbage ranking.npz", "caches", _garbage_ranking, message="not a ranking written by `submit`"),
    Case("ranking.npz of another test set", "caches", _other_test_set_ranking, message="ranks 3 queries"),
    Case("ranking.npz of an earlier checkpoint", "caches", _earlier_checkpoint_ranking,
         message="was made by an earlier"),
    # ensemble members
    Case("member weight .nan", "ensemble", _members("[{run: toy-tiny, weight: .nan}]"), message="ensemble.members"),
    Case("member weight .inf", "ensemble", _members("[{run: toy-tiny, weight: .inf}]"), message="ensemble.members"),
    Case("member weight abc", "ensemble", _members("[{run: toy-tiny, weight: abc}]"), message="ensemble.members"),
    Case("member weight null", "ensemble", _members("[{run: toy-tiny, weight: null}]"), message="ensemble.members"),
    Case("member weight a list", "ensemble", _members("[{run: toy-tiny, weight: [1]}]"), message="ensemble.members"),
    Case("member run: 123", "ensemble", _members("[{run: 123}]"), message="ensemble.members"),
    Case("member listed twice", "ensemble", _members("[{run: toy-tiny}, {run: toy-tiny}]"),
         message="each run once"),
    # folders: nothing deleted that this project did not build, nothing replaced before the new one is whole
    Case("kernel --out holding a user's model/", "folders", _users_folder, message="did not build"),
    Case("kernel build that fails keeps the last one", "folders", _failed_rebuild, message="Python 2.7"),
    Case("kernel-dryrun --work of a user's runs", "folders", _dryrun_work_not_ours, message="did not build"),
    Case("kernel settings asking for label re-ranking without train descriptors", "arguments",
         lambda c: _kernel(c, "--config", "toy", f"data.root={c.tiny_root}", "--out", str(c.tmp / "kaggle")),
         code=0, errors=0, message="needs the train descriptors"),
    Case("kernel-dryrun --test-images beyond the disk", "arguments", _dryrun_too_many_test_images,
         message="GB free", check=lambda c: not (c.tmp / "dry").exists()),
    # what `make kernel` ships
    Case("kernel: random bytes as checkpoint", "kernel build",
         _kernel_checkpoint(lambda c: np.random.default_rng(1).bytes(2048)), message="not a readable PyTorch file"),
    Case("kernel: a bare state dict", "kernel build",
         _kernel_checkpoint(_state_dict_bytes),
         message="not a checkpoint written by"),
    Case("kernel: a pickle payload", "kernel build", _kernel_checkpoint(_pickled_checkpoint),
         message="not a readable PyTorch file"),
    Case("kernel: weights that describe as NaN", "kernel build", _kernel_checkpoint(_nan_checkpoint),
         message="non-finite"),
    # filesystem faults: one line naming the path and the errno in words
    Case("full disk while extracting", "filesystem", _submit, patch=_os_fault(28, "shard"),
         message="no space left on device (ENOSPC)"),
    Case("read-only --out", "filesystem", _submit, patch=_os_fault(30, "sub"),
         message="read-only file system (EROFS)"),
    Case("permission denied on --out", "filesystem", _submit, patch=_os_fault(13, "sub"),
         message="permission denied (EACCES)"),
    Case("infer.index.spill_dir is a file", "filesystem", _spill_dir_is_a_file, message="spill"),
    # arguments and values out of range
    Case("bench --dim 0", "arguments", lambda c: ["bench", "scale", "--dim", "0"], message="--dim: 0 is below 1"),
    Case("bench extract --images 0", "arguments", lambda c: ["bench", "extract", "--images", "0"],
         message="--images: 0 is below 1"),
    Case("bench --index-size -5", "arguments", lambda c: ["bench", "search", "--index-size", "-5"],
         message="--index-size"),
    Case("ablate-heads --variants remap alone", "arguments",
         lambda c: ["ablate-heads", *c.args(), "--variants", "remap"], message="name at least one other"),
    Case("ivfpq on a tiny index falls back to flat", "arguments", _tiny_ivfpq, code=0, errors=0,
         message="exact flat index"),
    Case("neg_num above pool_size", "arguments",
         lambda c: ["train", *c.args("train.neg_num=50", "train.pool_size=3")], message="train.pool_size=3"),
    Case("SuperGlobal on top of DBA", "arguments",
         lambda c: ["submit", *c.args("infer.superglobal.enabled=true", "infer.dba.enabled=true")],
         message="infer.dba.enabled=false or infer.superglobal.enabled=false"),
    Case("train.select=val_landmarks without held-out landmarks", "arguments",
         lambda c: ["train", *c.args("train.select=val_landmarks", "train.val_landmarks=0", "run.name=fresh")],
         message="train.select=val_landmarks needs held-out landmarks"),
    Case("preprocess --size 0", "arguments", lambda c: ["preprocess", *c.args(), "--size", "0"],
         message="--size: 0 is below 1"),
    Case("val_landmarks above what can be held out", "arguments",  # when they choose the epoch: with
         # validation queries choosing it, more than can be spared is warned and none are held out
         lambda c: ["train", *c.args("train.val_landmarks=1000", "train.select=val_landmarks", "run.name=fresh")],
         message="train.val_landmarks=1000"),
    Case("viz --queries -1", "arguments", lambda c: ["viz", "retrieval", *c.args(), "--queries", "-1"],
         message="--queries"),
    Case("kernel-dryrun --test-images -5", "arguments", lambda c: ["kernel-dryrun", "--test-images", "-5"],
         message="--test-images"),
    Case("kernel-dryrun --time-limit -1", "arguments", lambda c: ["kernel-dryrun", "--time-limit", "-1"],
         message="--time-limit"),
    Case("kaggle submit --version -2", "arguments",
         lambda c: ["kaggle", "submit", "--kernel", "me/nb", "--version", "-2"], message="--version"),
    # the command line itself
    Case("unknown option", "command line", lambda c: ["train", "--nope"], message="unrecognized arguments: --nope"),
    Case("unknown stage", "command line", lambda c: ["trian"], message="invalid choice: 'trian'"),
    Case("SOLUTION_DEBUG=false is not debugging", "command line", lambda c: ["train", *c.args("train.image_size=0")],
         env={"SOLUTION_DEBUG": "false"}, message="train.image_size"),
    Case("SOLUTION_DEBUG=no is not debugging", "command line", lambda c: ["submit", *c.args("infer.batch_size=0")],
         env={"SOLUTION_DEBUG": "no"}, message="infer.batch_size"),
    # paths stay inside their roots
    Case("run.name=../../..", "paths", lambda c: ["train", *c.args("run.name=../../..")], message="run.name"),
    Case("run.name with a slash", "paths", lambda c: ["submit", *c.args("run.name=a/b")], message="run.name"),
    Case("competition slug with ..", "paths",
         lambda c: ["validate", "--competition", "../toy", "--data-root", str(c.tiny_root), str(c.submission())],
         message="not a plain name"),
    Case("test.csv with a header alone", "paths", _header_only_test_csv, message="lists no images"),
    # interrupts and locks
    Case("interrupt Python swallowed", "interrupts", _submit, code=130, errors=0, patch=_swallowed_interrupt,
         message="interrupted:"),
    Case("a second writer of one run", "interrupts", _lock_held, message="is in use by"),
]


# ---- the second sweep (#29): each case was a traceback, a hang, a filled disk or a silent wrong result

def _fresh_submit(ctx, *extra):
    """After a first submit: the run's own ranking files cleared, so the second one writes new ones."""
    for own in ("ranking.npz", "submit.json"):
        (ctx.runs / "toy-tiny" / own).unlink(missing_ok=True)
    return ["submit", *ctx.args(*extra), "--out", str(ctx.tmp / "second")]


def _shards_without_manifest(ctx):
    folder = _features(ctx)
    (folder / "manifest.json").unlink()
    (folder.parent / "test.npy").unlink()
    return _fresh_submit(ctx)


def _merged_ids(ctx, edit):
    """The merged split's id list edited: it no longer matches the split, so the shards are merged again."""
    folder = _features(ctx)
    edit(folder.parent / "test.ids.txt")
    return _fresh_submit(ctx)


def _merged_again(ctx):
    """The merged split was rebuilt from its shards: its id list is the split's again, as a regular file."""
    merged = next((ctx.runs / "toy-tiny" / "features").glob("*/test.ids.txt"))
    assert not merged.is_symlink()
    assert merged.read_text().split() == read_ids(ctx.tiny_root / "toy" / "test.csv")


def _shard_ids(ctx, edit):
    """A shard's id list edited, the merged file gone: the merge must refuse what it cannot trust."""
    folder = _features(ctx)
    (folder.parent / "test.npy").unlink()
    edit(folder / "part-00000.ids.txt")
    return _fresh_submit(ctx)


def _reversed(path: Path) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(reversed(lines)) + "\n")


def _dev_zero(path: Path) -> None:
    path.unlink()
    path.symlink_to("/dev/zero")


def _reordered_test_csv(ctx):
    _features(ctx, f"data.root={ctx.data}")
    csv_path = ctx.data / "toy" / "test.csv"
    header, *rows = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([header, *reversed(rows)]) + "\n")
    return _fresh_submit(ctx, f"data.root={ctx.data}")


def _val_is_test(ctx):
    """Validation queries that are the test queries, images and all: what is chosen on them is chosen on test."""
    toy = ctx.data / "toy"
    shutil.copy(toy / "test.csv", toy / "val.csv")
    shutil.copy(toy / "retrieval_solution_v2.1.csv", toy / "val_solution.csv")
    shutil.rmtree(toy / "val")
    shutil.copytree(toy / "test", toy / "val")
    return ["tune", *ctx.args("infer.qe.enabled=true", data=True)]


def _val_solution_missing(ctx):
    (ctx.data / "toy" / "val_solution.csv").unlink()
    return ["train", *ctx.args("run.name=fresh", data=True)]


def _nan_run_checkpoint(ctx):
    ctx.checkpoint().write_bytes(_nan_checkpoint(ctx))
    return _submit(ctx)


def _best_over_checkpoint(ctx):
    run = ctx.runs / "toy-tiny"
    shutil.copy(run / "best.pt", run / "checkpoint.pt")
    return ["train", *ctx.args("train.epochs=2", "train.lr=1.0e-3")]


def _best_of_another_head(ctx):
    from solution.config import load_config
    from solution.model.net import build_net, save_checkpoint

    cfg = load_config("toy-tiny", ["model.head=mac", "model.pretrained=none"])
    save_checkpoint(ctx.runs / "toy-tiny" / "best.pt", build_net(cfg["model"]), epoch=1, score=0.5)
    return ["train", *ctx.args("train.epochs=2")]


def _result_json(ctx, edit):
    result = json.loads((REPO / "docs" / "results" / "train-toy.json").read_text())
    return ["results", "--add", str(ctx.write("runs/x/train.json", json.dumps(edit(result))))]


def _hand_edited(result):
    result["test"]["after"]["map"] = 0.99
    return result


def _no_provenance(result):
    result.pop("provenance")
    return result


def _unknown_shape(result):
    result["recipe"] = "five epochs"  # a hand-made file: the table cannot read it
    result["provenance"].pop("content_sha1")
    return result


def _results_into(monkeypatch, ctx):
    """`results --add` files under the case's own folder, never the repository's docs, whatever it decides."""
    import functools

    from solution import results

    monkeypatch.setattr(results, "add_result", functools.partial(results.add_result, root=ctx.tmp / "repo"))


def _sigterm_during_submit(monkeypatch, ctx):
    """SIGTERM (a scheduler's kill, torchrun stopping the ranks) while the command works: one line, exit 143."""
    import signal

    from solution.infer import submit as module

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("SIGTERM was not delivered")
    monkeypatch.setattr(module, "write_submission", terminated)


def _override(value: str):
    return lambda c: ["train", *c.args(value)]


SECOND_SWEEP = [
    # caches: trusted by content, not by shape
    Case("shards without a manifest", "caches", _shards_without_manifest, code=0, errors=0,
         message="shards without a manifest", rewrites=True),
    Case("merged features holding NaN", "caches", _damaged_merged(lambda a: np.where(np.arange(a.size).reshape(
        a.shape) == 0, np.nan, a).astype(a.dtype)), message="NaN or inf"),
    Case("merged features holding inf", "caches", _damaged_merged(lambda a: np.full_like(a, np.inf)),
         message="NaN or inf"),
    Case("merged ids in another order", "caches", lambda c: _merged_ids(c, _reversed), code=0, errors=0,
         rewrites=True, check=_merged_again),
    Case("merged ids linked to /dev/zero", "caches", lambda c: _merged_ids(c, _dev_zero), code=0, errors=0,
         rewrites=True, check=_merged_again),
    Case("shard ids in another order", "caches", lambda c: _shard_ids(c, _reversed),
         message="made for another image list"),
    Case("shard ids linked to /dev/zero", "caches", lambda c: _shard_ids(c, _dev_zero), message="not a regular file"),
    Case("test.csv reordered: same count, other list", "caches", _reordered_test_csv, code=0, errors=0,
         message="image list or shard size changed", rewrites=True),
    # validation kept apart from test
    Case("val.csv equal to test.csv", "validation", _val_is_test, message="validation must be apart from test"),
    Case("val_solution.csv missing, select=auto", "validation", _val_solution_missing, code=0, errors=0,
         message="so the epoch is chosen by"),
    # every numeric key ranged
    *[Case(f"{key}={value}", "values", _override(f"{key}={value}"), message=key) for key, value in (
        ("model.regions.reference", "[0,0]"), ("model.regions.reference", "[32]"), ("infer.index.nprobe", "0"),
        ("infer.index.nlist", "0"), ("infer.diffusion.alpha", "2"), ("infer.diffusion.iterations", "0"),
        ("infer.combine_p", ".inf"), ("train.image_size", "1"), ("model.kl.bins", "1"),
        ("model.regions.overlap", "1"), ("infer.scales", "[1,1]"))],
    Case("dba.k beyond the index is said", "values", lambda c: _submit(c, "infer.dba.enabled=true",
                                                                        "infer.dba.k=100000"),
         code=0, errors=0, message="infer.dba.k=100000 is more than"),
    Case("qe.n beyond the index is said", "values", lambda c: _submit(c, "infer.qe.enabled=true",
                                                                       "infer.qe.n=100000"),
         code=0, errors=0, message="infer.qe.n=100000 is more than"),
    Case("neg_num beyond the other landmarks", "values",
         lambda c: ["train", *c.args("train.loss=triplet", "train.neg_num=400", "train.pool_size=500",
                                     "run.name=fresh")], message="negatives of distinct landmarks"),
    Case("NaN weights never make a validated submission", "values", _nan_run_checkpoint, message="NaN"),
    # resume and checkpoints
    Case("best.pt copied over checkpoint.pt", "resume", _best_over_checkpoint, message="no training state"),
    Case("best.pt of another head", "resume", _best_of_another_head, message="holds another network"),
    Case("train on a finished run", "resume", lambda c: ["train", *c.args()], code=0, errors=0,
         message="already finished"),
    # studies and result files
    Case("results --add a hand-edited result", "studies", lambda c: _result_json(c, _hand_edited),
         patch=_results_into, message="was changed after it was measured"),
    Case("results --add without provenance", "studies", lambda c: _result_json(c, _no_provenance),
         patch=_results_into, message="says nothing of what made it"),
    Case("results --add of another shape", "studies", lambda c: _result_json(c, _unknown_shape),
         patch=_results_into, message="cannot be drawn as its table"),
    Case("results --check with --add", "studies",
         lambda c: ["results", "--check", "--add", str(REPO / "docs" / "results" / "train-toy.json")],
         message="files nothing"),
    Case("ablate-heads --seeds 0 0", "studies", lambda c: ["ablate-heads", *c.args(), "--seeds", "0", "0"],
         message="seed"),
    Case("plan --gpus 1000 for a 3-tuple step", "studies",
         lambda c: ["plan", *c.args("train.tuples_per_step=3"), "--gpus", "1000", "--gpu", "t4"],
         message="--gpus 1000 is more than train.tuples_per_step=3"),
    Case("tune --grid qe.n=0,1", "studies", lambda c: ["tune", *c.args("infer.qe.enabled=true"), "--grid", "qe.n=0,1"],
         message="infer.qe.n"),
    # one line, the right one
    Case("override with a control character", "one line", _override("train.lr=1e-4\x07"),
         message="control character"),
    Case("non-ASCII path under a C locale", "one line", _override("data.root=/tmp/caf\udce9"),
         message="cannot decode"),
    Case("export --size 100000x100000", "one line",
         lambda c: ["export", *c.args(), "--size", "100000x100000"], message="32 to 4096 pixels"),
    Case("SIGTERM during submit", "one line", _submit, code=143, errors=0, patch=_sigterm_during_submit,
         message="interrupted (SIGTERM)"),
]
CASES += SECOND_SWEEP


@pytest.fixture(scope="module")
def trained(tiny_root, tmp_path_factory):
    runs = tmp_path_factory.mktemp("trained")
    assert main(["train", *TINY, f"data.root={tiny_root}", f"run.dir={runs}"]) == 0
    return runs / "toy-tiny"


def _snapshot(*folders: Path) -> dict[Path, str]:
    return {p: hashlib.sha1(p.read_bytes()).hexdigest() for folder in folders if folder.exists()
            for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case, tiny_root, trained, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "SOLUTION_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ctx = Ctx(tmp_path, tiny_root, trained)
    argv = case.prepare(ctx)
    for key, value in {**getattr(ctx, "kaggle_env", {}), **(case.env or {})}.items():
        monkeypatch.setenv(key, value)
    if case.patch is not None:
        case.patch(monkeypatch, ctx)
    before = _snapshot(tmp_path, trained, tiny_root)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == case.code, (out, err)
    assert len(errors) == case.errors, err
    assert "Traceback" not in err + out + caplog.text
    assert case.message in (errors[0] if errors else out + err + caplog.text), (errors, out)
    after = _snapshot(tmp_path, trained, tiny_root)
    changed = [p for p, digest in before.items() if after.get(p) != digest]
    assert case.rewrites or not changed, changed
    assert not [p for p in after if p.name.endswith(".tmp")]
    if case.name == "submit --out is a file (checked first)":
        assert not (ctx.runs / "toy-tiny" / "features").exists()  # refused before any extraction
    if case.check is not None:
        case.check(ctx)


def test_debug_shows_the_traceback(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setenv("SOLUTION_DEBUG", "1")
    with pytest.raises(Exception, match="train.image_size"):
        main(["train", *TINY, f"data.root={tiny_root}", f"run.dir={tmp_path}", "train.image_size=0"])


def test_docs_table_matches_the_suite():
    """docs/reliability.md's table: one row per category with its case count."""
    text = (REPO / "docs" / "reliability.md").read_text()
    section = text[text.index("# Reliability"):]
    rows = {}
    for line in section.splitlines()[1:]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 3 and cells[1].isdigit():
            rows[cells[0]] = int(cells[1])
    counts: dict[str, int] = {}
    for case in CASES:
        counts[case.category] = counts.get(case.category, 0) + 1
    assert rows == counts and sum(counts.values()) >= 40
    assert json.dumps(rows)  # a table was found
