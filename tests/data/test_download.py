"""GLDv2 shard downloads against a real HTTP server on 127.0.0.1 serving toy shards and md5 files."""

import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from solution.data.download import (
    DownloadError,
    Retry,
    UnsafeArchive,
    download_gldv2,
    download_shard,
    fetch,
    parse_shards,
    safe_extract,
)

FAST = Retry(attempts=4, backoff=0.01, timeout=5)


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Server:
    """Serves ``files``; ``corrupt[path] = n`` sends wrong bytes n times, ``drop[path] = n`` hangs up
    halfway through the body n times. Honours Range requests and logs them."""

    def __init__(self):
        self.files, self.corrupt, self.drop, self.requests = {}, {}, {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                data = outer.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                if outer.corrupt.get(self.path, 0) > 0:
                    outer.corrupt[self.path] -= 1
                    data = bytes(b ^ 0xFF for b in data)
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.drop.get(self.path, 0) > 0:
                    outer.drop[self.path] -= 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)  # the connection dies mid-body
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add_shard(self, split: str, number: int, members: dict[str, bytes]) -> bytes:
        data = _tar(members)
        self.files[f"/{split}/images_{number:03d}.tar"] = data
        self.files[f"/md5sum/{split}/md5.images_{number:03d}.txt"] = \
            f"{hashlib.md5(data).hexdigest()}  images_{number:03d}.tar\n".encode()
        return data


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


IMAGES = {"0/1/2/0123456789abcdef.jpg": b"jpeg-1" * 50, "a/b/c/abc0000000000000.jpg": b"jpeg-2" * 70}


def test_clean_download_extracts_and_second_run_skips(server, tmp_path):
    server.add_shard("index", 0, IMAGES)
    assert download_shard(server.base, "index", 0, tmp_path, FAST) == "done"
    assert (tmp_path / "index/0/1/2/0123456789abcdef.jpg").read_bytes() == IMAGES["0/1/2/0123456789abcdef.jpg"]
    assert not (tmp_path / "tars/index/images_000.tar").exists()  # deleted unless asked to keep
    before = len(server.requests)
    assert download_shard(server.base, "index", 0, tmp_path, FAST) == "skipped"
    assert len(server.requests) == before


def test_corrupt_shard_is_fetched_again(server, tmp_path):
    server.add_shard("test", 3, IMAGES)
    server.corrupt["/test/images_003.tar"] = 1
    assert download_shard(server.base, "test", 3, tmp_path, FAST, keep_tar=True) == "done"
    assert [p for p, _ in server.requests].count("/test/images_003.tar") == 2
    assert (tmp_path / "tars/test/images_003.done").is_file()
    server.add_shard("test", 4, IMAGES)
    server.corrupt["/test/images_004.tar"] = 10
    with pytest.raises(DownloadError, match="md5 still wrong"):
        download_shard(server.base, "test", 4, tmp_path, FAST)


def test_dropped_connection_resumes_with_range(server, tmp_path):
    data = server.add_shard("index", 1, {f"0/0/0/{i:016x}.jpg": bytes([i]) * 4000 for i in range(20)})
    server.drop["/index/images_001.tar"] = 1
    path = fetch(server.base + "/index/images_001.tar", tmp_path / "x.tar", FAST)
    assert path.read_bytes() == data
    ranges = [r for p, r in server.requests if p == "/index/images_001.tar"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data[: len(data) // 2])}-"


def test_tar_escaping_its_folder_is_refused(tmp_path):
    evil = tmp_path / "evil.tar"
    evil.write_bytes(_tar({"0/1/2/ok.jpg": b"fine", "../outside.jpg": b"pwned"}))
    with pytest.raises(UnsafeArchive, match=r"'\.\./outside\.jpg' would leave"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "outside.jpg").exists() and not (tmp_path / "out/0/1/2/ok.jpg").exists()
    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w") as archive:
        info = tarfile.TarInfo("a/b/c/link.jpg")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(info)
    (tmp_path / "link.tar").write_bytes(link.getvalue())
    with pytest.raises(UnsafeArchive, match="is a link"):
        safe_extract(tmp_path / "link.tar", tmp_path / "out")


def test_missing_file_is_one_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.base + "/nope.tar", tmp_path / "nope.tar", FAST)


def test_parse_shards():
    assert parse_shards("0-2,5", "test") == [0, 1, 2, 5]
    assert len(parse_shards(None, "index")) == 100
    with pytest.raises(ValueError, match="0-19"):
        parse_shards("18-25", "test")


def test_full_run_with_train_clean_subset(server, tmp_path):
    for name, text in {"train.csv": "id,url,landmark_id\n0123456789abcdef,u,1\n1123456789abcdef,u,1\n",
                       "train_clean.csv": "landmark_id,images\n1,0123456789abcdef\n",
                       "index.csv": "id\n", "test.csv": "id\n",
                       "retrieval_solution_v2.1.csv": "id,images,Usage\n"}.items():
        folder = "ground_truth" if name.startswith("retrieval") else "metadata"
        server.files[f"/{folder}/{name}"] = text.encode()
    server.add_shard("train", 0, {"0/1/2/0123456789abcdef.jpg": b"a", "1/1/2/1123456789abcdef.jpg": b"b"})
    counts = download_gldv2(tmp_path, ["train"], "0", workers=2, train_clean=True, base=server.base, retry=FAST)
    assert counts == {"done": 1, "skipped": 0}
    assert (tmp_path / "train/0/1/2/0123456789abcdef.jpg").is_file()
    assert not (tmp_path / "train/1/1/2/1123456789abcdef.jpg").exists()  # not in train_clean
