import json

from PIL import Image

from solution.data.photos import PhotoSet, generate, leave_one_out, scenes


def test_real_photo_views_and_leave_one_out(tmp_path):
    spec = PhotoSet(views=3, distractors=4, image_size=64)
    truth = generate(tmp_path, spec)
    n_scenes = len(scenes())
    assert n_scenes == 28 and len(truth["images"]) == 3 * n_scenes + 4
    assert truth["scene"].count(None) == 4
    for name in truth["images"]:
        with Image.open(tmp_path / name) as image:
            assert image.format == "JPEG" and max(image.size) == 64
    queries, relevant = leave_one_out(truth)
    assert len(queries) == 3 * n_scenes
    for q in queries:
        assert len(relevant[q]) == 2 and q not in relevant[q]
        assert {truth["scene"][i] for i in relevant[q]} == {truth["scene"][q]}
    # 14 photographs, each cut into two halves that are scenes of their own
    assert set(truth["scene"]) >= {"motorcycle-a", "motorcycle-b"}
    first = (tmp_path / "motorcycle-a-00.jpg").read_bytes()
    assert generate(tmp_path, spec) == truth and (tmp_path / "motorcycle-a-00.jpg").read_bytes() == first
    assert json.loads((tmp_path / "truth.json").read_text())["stamp"]["views"] == 3
    other = generate(tmp_path / "b", PhotoSet(views=3, distractors=4, image_size=64, seed=1))
    assert (tmp_path / "b" / "motorcycle-a-00.jpg").read_bytes() != first
    assert len(other["images"]) == len(truth["images"])
