"""The exported captioner: a SavedModel that reads photo bytes as utils.load_image does and writes
utils.caption_image's captions, in a process where this repository cannot be imported."""
import io
import json
import subprocess
import sys

import matplotlib.cbook
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import utils
from conftest import SHIPPED_RUN

# A public-domain photo (U.S. Navy, 1984) that matplotlib installs with its sample data.
PUBLIC_DOMAIN_PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)

# In a fresh process: `import utils` must fail, then the SavedModel captions the photos given.
LOAD_AND_CAPTION = """
import json, sys
sys.modules["utils"] = None  # this repository's package cannot be imported here
try:
    import utils
except ImportError:
    pass
else:
    raise SystemExit("utils could be imported")
import tensorflow as tf
captioner = tf.saved_model.load(sys.argv[1])
photos = [open(path, "rb").read() for path in sys.argv[2:]]
found = captioner.signatures["serving_default"](photos=tf.constant(photos))
print(json.dumps({"captions": [c.decode() for c in found["captions"].numpy()],
                  "scores": found["scores"].numpy().tolist()}))
"""


def exported_captions(folder, paths):
    """The SavedModel's captions and scores of image files, from a process without utils."""
    done = subprocess.run([sys.executable, "-c", LOAD_AND_CAPTION, str(folder), *map(str, paths)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def photo_bytes(image, format, **options):
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def test_the_exported_shipped_run_captions_photos_as_caption_image_does(shared_flickr8k, tmp_path):
    folder = utils.export_captioner(SHIPPED_RUN, tmp_path / "captioner")
    paths = [*sorted((shared_flickr8k / "Images").glob("*.jpg"))[:19], PUBLIC_DOMAIN_PHOTO]
    captioner = utils.Captioner.from_run(SHIPPED_RUN)
    expected = [utils.caption_image(captioner, path).text for path in paths]
    found = exported_captions(folder, paths)
    assert found["captions"] == expected
    assert len(found["scores"]) == 20 and all(np.isfinite(found["scores"]))
    record = utils.read_json(folder / utils.CAPTIONER_RECORD)
    assert record["runs"] == [SHIPPED_RUN.name] and record["decoding"] == "beam5-lp1-nr2"


def test_an_exported_ensemble_across_encoders_captions_as_its_captioner_does(shared_runs,
                                                                             shared_flickr8k,
                                                                             tmp_path):
    """Runs on Lite0's and Lite2's features as one exported model: each photo read at 224 and at
    260 px inside the graph, through both networks, and decoded as one ensemble."""
    runs = [shared_runs["lite0"], shared_runs["lite2"]]
    greedy = utils.DecodingSetting(1, 0.0, 2)
    folder = utils.export_captioner(runs, tmp_path / "ensemble", greedy)
    captioner = utils.Captioner.from_run(runs)
    photos = [*sorted((shared_flickr8k / "Images").glob("*.jpg"))[:3], PUBLIC_DOMAIN_PHOTO]
    assert exported_captions(folder, photos)["captions"] == [
        utils.caption_image(captioner, path, greedy).text for path in photos]
    record = utils.read_json(folder / utils.CAPTIONER_RECORD)
    assert [e["encoder"] for e in record["encoders"]] == ["efficientnet_lite0", "efficientnet_lite2"]


def test_a_photo_is_read_in_the_graph_exactly_as_load_image_reads_it():
    """Pillow's reading in TensorFlow ops, pixel for pixel: JPEGs at each of libjpeg's reduced
    scales, grey ones, tall ones, turned by their EXIF orientation, PNGs with transparency, a
    palette or grey and alpha, very large PNGs (Image.reduce), photos smaller than the encoder's
    square."""
    photo = Image.open(PUBLIC_DOMAIN_PHOTO)
    translucent = photo.convert("RGBA")
    translucent.putalpha(Image.fromarray(
        np.random.default_rng(0).integers(0, 256, photo.size[::-1], dtype=np.uint8)))
    cases = {f"jpeg {size}": photo_bytes(photo.resize(size), "JPEG", quality=92)
             for size in [(150, 90), (640, 480), (1100, 1030), (2100, 1600), (4200, 3000),
                          (200, 300), (300, 500), (100, 400)]}  # tall ones: resized height first
    for orientation in range(10):  # EXIF Orientation: 1-8 turn the photo, 0 and 9 mean nothing
        exif = Image.Exif()
        exif[0x0112] = orientation
        cases[f"jpeg turned {orientation}"] = photo_bytes(photo.resize((300, 200)), "JPEG",
                                                          exif=exif.tobytes())
    cases |= {f"png {size}": photo_bytes(photo.resize(size), "PNG")
              for size in [(500, 375), (2100, 1600), (3300, 3100)]}
    cases |= {"grey jpeg": photo_bytes(photo.convert("L"), "JPEG"),
              "png alpha": photo_bytes(translucent, "PNG"),
              "png palette": photo_bytes(photo.convert("P"), "PNG"),
              "png grey and alpha": photo_bytes(photo.convert("LA"), "PNG")}
    for name, data in cases.items():
        for size in (224, 299):
            np.testing.assert_array_equal(
                utils.read_photo(tf.constant(data), size).numpy(),
                utils.load_image(io.BytesIO(data), size), err_msg=f"{name} at {size}")


def test_bytes_that_are_no_photo_are_refused():
    with pytest.raises(tf.errors.InvalidArgumentError, match="neither a JPEG nor a PNG"):
        utils.read_photo(tf.constant(b"GIF89a not a photo"), 224)
