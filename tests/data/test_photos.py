import json

from PIL import Image

from solution.data.photos import PhotoSet, generate, leave_one_out, scenes

PHOTOGRAPHS = {"camera", "rocket", "astronaut", "chelsea", "coffee", "motorcycle", "china", "flower", "ascent", "aero",
               "grace_hopper"}


def test_real_photo_views_and_leave_one_out(tmp_path):
    spec = PhotoSet(views=3, distractors=4, image_size=64)
    truth = generate(tmp_path, spec)
    n_scenes = len(scenes())
    assert n_scenes == 2 * len(PHOTOGRAPHS) and len(truth["images"]) == 3 * n_scenes + 4
    assert truth["scene"].count(None) == 4
    # every view knows its source photograph: the check's intervals resample photographs, not views
    assert set(truth["source"][: 3 * n_scenes]) == PHOTOGRAPHS
    assert set(truth["source"][3 * n_scenes:]) <= {"brick", "grass", "gravel"}
    for name in truth["images"]:
        with Image.open(tmp_path / name) as image:
            assert image.format == "PNG" and image.size == (64, 64)
    queries, relevant = leave_one_out(truth)
    assert len(queries) == 3 * n_scenes
    for q in queries:
        assert len(relevant[q]) == 2 and q not in relevant[q]
        assert {truth["scene"][i] for i in relevant[q]} == {truth["scene"][q]}
    assert set(truth["scene"]) >= {"motorcycle-a", "motorcycle-b", "ascent-a", "china-b"}
    first = (tmp_path / "motorcycle-a-00.png").read_bytes()
    assert generate(tmp_path, spec) == truth and (tmp_path / "motorcycle-a-00.png").read_bytes() == first
    assert json.loads((tmp_path / "truth.json").read_text())["stamp"]["views"] == 3
    other = generate(tmp_path / "b", PhotoSet(views=3, distractors=4, image_size=64, seed=1))
    assert (tmp_path / "b" / "motorcycle-a-00.png").read_bytes() != first
    assert len(other["images"]) == len(truth["images"])


def test_views_are_hard_and_made_without_the_toy_renderer(tmp_path):
    from solution.data import photos

    assert "toy" not in {name.split(".")[-1] for name in vars(photos) if not name.startswith("__")}
    assert "from .toy" not in open(photos.__file__).read()
    pipeline = repr(photos.view_pipeline(64, (1 / 3, 1.0)))
    for step in ("rotate=(-30", "ToGray", "quality_range=(20, 60)", "scale=(0.333"):
        assert step in pipeline, step
    truth = generate(tmp_path, PhotoSet(views=8, distractors=0, image_size=64))
    grey_photos = {"camera", "ascent", "aero"}
    colour = [name for name, source in zip(truth["images"], truth["source"]) if source not in grey_photos]
    greys = 0
    for name in colour:
        r, g, b = Image.open(tmp_path / name).convert("RGB").split()
        greys += r.tobytes() == g.tobytes() == b.tobytes()
    assert 0.1 < greys / len(colour) < 0.4  # views of colour photographs turned grey with p=0.25


def test_example_folder_is_laid_out_as_a_users_folder(tmp_path):
    from solution.data.folder import folder_spec, labelled_images
    from solution.data.photos import write_label_folders

    counts = write_label_folders(tmp_path, PhotoSet(views=2, distractors=3))
    assert counts == {"scenes": 22, "views": 44, "distractors": 3}
    pairs = labelled_images(folder_spec({"images": "scenes"}, tmp_path))
    assert len(pairs) == 44 and len({label for _, label in pairs}) == 22
    assert len(list((tmp_path / "distractors").iterdir())) == 3
    assert write_label_folders(tmp_path, PhotoSet(views=2, distractors=3)) == counts  # again: nothing changes
