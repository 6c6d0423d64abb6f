"""Data: the bundled task, image folders (torchvision's ``ImageFolder`` layout) and data
plug-ins, each as three splits.

Every task has train (teacher training and fine-tuning) / validation (what the search
optimises) / test (reported on export only) splits, cut with a fixed seed where the data does
not bring them. The bundled ``digits`` is scikit-learn's handwritten digits (1,797 8x8 grey
images, 10 classes, shipped inside scikit-learn). ``fashion-mnist`` is Zalando's Fashion-MNIST
(70,000 28x28 grey images of clothes, 10 classes) as Debian's ``dataset-fashion-mnist`` installs
it, or from a folder holding its four IDX files (``--data-root``).

An image folder is read once into tensors (the search fine-tunes hundreds of models on the
same images, so decoding them once pays): every image converted to RGB, resized on its
shorter side to ``image_size`` and centre-cropped, then normalised per channel with the
training split's mean and standard deviation (``normalize="data"``) or ImageNet's
(``"imagenet"``, for ImageNet-trained checkpoints). Class discovery and the list of image
extensions are torchvision's own (``torchvision.datasets.folder``).

Layout: ``ROOT/<class>/<image>``, split 60/20/20 per class with the seed; or
``ROOT/train/<class>/...`` with optional ``ROOT/val`` and ``ROOT/test`` (a missing one is cut
from train, 20 % per class).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tradeoff.search.errors import UsageError
from tradeoff.search.plugins import call_with_accepted, is_plugin, load_plugin


@dataclass(frozen=True, eq=False)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def _split_indices(y: np.ndarray, seed: int, fractions=(0.6, 0.2, 0.2)) -> tuple[np.ndarray, ...]:
    """A stratified split with a fixed seed: every class in the same proportion in each part."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        a = int(round(fractions[0] * len(idx)))
        b = a + int(round(fractions[1] * len(idx)))
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.extend(chunk.tolist())
    return tuple(np.sort(np.array(p)) for p in parts)


DIGITS_SPLIT_SEED = 0


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, (images 1797x8x8 in 0-16, labels), as ``load_digits`` gives them.
    Read from the CSV scikit-learn ships, found without importing scikit-learn (its import takes
    a second of every `tradeoff search` start for one 1797-row file); ``load_digits`` if the file
    is not where it has always been."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = (
        os.path.join(os.path.dirname(spec.origin or ""), "datasets", "data", "digits.csv.gz") if spec else ""
    )
    if os.path.isfile(path):
        data = np.loadtxt(path, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def digits_splits() -> tuple[Split, Split, Split]:
    images, target = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    tr, va, te = _split_indices(target, DIGITS_SPLIT_SEED)
    mean, std = x[tr].mean(), x[tr].std()  # normalisation from the training split only
    x = (x - mean) / std
    return tuple(Split(x[i], y[i]) for i in (tr, va, te))  # type: ignore[return-value]


# -- Fashion-MNIST, from Debian's dataset-fashion-mnist ---------------------------------------

FASHION_MNIST_DIR = (
    "/usr/share/datasets/fashion-mnist"  # where `apt-get install dataset-fashion-mnist` puts it
)
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_VAL_FRACTION = 1 / 12  # 5,000 of the 60,000 training images, held out per class
FASHION_SPLIT_SEED = 0
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """The array in an IDX file (LeCun's MNIST format: two zero bytes, a type code, the number of
    dimensions, each dimension as a big-endian 32-bit count, then the values), gzipped or not.
    Written here because torchvision's reader takes uncompressed files only and Debian ships them
    gzipped; UsageError names a file that is not IDX or is cut short."""
    import gzip

    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UsageError(f"{path}: a broken gzip file ({e}); reinstall dataset-fashion-mnist") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_TYPES or not 1 <= raw[3] <= 4:
        raise UsageError(f"{path}: not an IDX file (it does not start with the IDX magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    start, count = 4 + 4 * ndim, int(np.prod(shape))
    if len(raw) < start + count * dtype.itemsize:
        raise UsageError(
            f"{path}: cut short ({len(raw)} bytes for an array of shape {shape}); fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(shape)


def _idx_path(root: str, name: str) -> str | None:
    for candidate in (name + ".gz", name):
        path = os.path.join(root, candidate)
        if os.path.isfile(path):
            return path
    return None


def fashion_mnist_arrays(root: str | None = None) -> dict[str, np.ndarray]:
    """Zalando's Fashion-MNIST as arrays (``train_images`` 60000x28x28 uint8, ...), read from
    ``root`` (default: Debian's folder) where its four IDX files lie, gzipped or not."""
    folder = root or FASHION_MNIST_DIR
    paths = {key: _idx_path(folder, name) for key, name in FASHION_MNIST_FILES.items()}
    missing = [FASHION_MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        where = f"--data-root {folder}" if root else folder
        raise UsageError(
            f"fashion-mnist: {where} lacks {', '.join(missing)}[.gz]; install the data with `sudo apt-get "
            "install dataset-fashion-mnist` (Debian, Ubuntu) or point --data-root at a folder with the four "
            "IDX files"
        )
    arrays = {key: read_idx(path) for key, path in paths.items()}  # type: ignore[arg-type]
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or not len(labels):
            raise UsageError(
                f"fashion-mnist: {part} images {images.shape} and labels {labels.shape} do not match; "
                f"fetch the files in {folder} again"
            )
        if labels.max() >= len(FASHION_MNIST_CLASSES):
            raise UsageError(f"fashion-mnist: {part} labels go up to {labels.max()}; expected 0-9")
    return arrays


def fashion_mnist_splits(root: str | None = None) -> tuple[Split, Split, Split]:
    """Fashion-MNIST's splits: training (the 60,000 training images less a validation split of
    one in twelve, 5,000, held out per class with a fixed seed), validation, and the official
    10,000 test images (reported by export and verify only). Normalised with the training
    split's mean and standard deviation."""
    a = fashion_mnist_arrays(root)
    y_all = a["train_labels"].astype(np.int64)
    rng = np.random.default_rng(FASHION_SPLIT_SEED)
    val_idx: list[int] = []
    for c in np.unique(y_all):
        idx = rng.permutation(np.flatnonzero(y_all == c))
        val_idx.extend(idx[: max(1, int(round(FASHION_VAL_FRACTION * len(idx))))].tolist())
    is_val = np.zeros(len(y_all), dtype=bool)
    is_val[val_idx] = True
    x_all = torch.from_numpy(a["train_images"].astype(np.float32) / 255.0).unsqueeze(1)
    x_test = torch.from_numpy(a["test_images"].astype(np.float32) / 255.0).unsqueeze(1)
    tr, va = torch.from_numpy(np.flatnonzero(~is_val)), torch.from_numpy(np.flatnonzero(is_val))
    mean, std = x_all[tr].mean(), x_all[tr].std()
    y = torch.from_numpy(y_all)
    return (
        Split((x_all[tr] - mean) / std, y[tr]),
        Split((x_all[va] - mean) / std, y[va]),
        Split((x_test - mean) / std, torch.from_numpy(a["test_labels"].astype(np.int64))),
    )


TASKS: dict[str, Callable[..., tuple[Split, Split, Split]]] = {
    "digits": digits_splits,
    "fashion-mnist": fashion_mnist_splits,
}
TASK_CLASSES = {"fashion-mnist": FASHION_MNIST_CLASSES}
TASKS_WITH_ROOT = ("fashion-mnist",)  # bundled tasks read from files a package installs


DEFAULT_IMAGE_SIZE = 64


NORMALIZATIONS = ("data", "imagenet")

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def data_kind(spec: str) -> str:
    """``bundled``, ``plugin`` or ``folder``; UsageError names a spec that is none of them."""
    if spec in TASKS:
        return "bundled"
    if is_plugin(spec):
        return "plugin"
    if os.path.isdir(spec):
        return "folder"
    if os.path.exists(spec):
        raise UsageError(f"--data {spec}: not a directory; give an image folder (one sub-folder per class)")
    raise UsageError(
        f"--data {spec}: no such folder, and not a bundled task ({', '.join(sorted(TASKS))}) or a plug-in "
        "package.module:function"
    )


SPLIT_DIRS = ("train", "val", "test")


@dataclass(frozen=True)
class LoadedFolder:
    splits: tuple[Split, Split, Split]
    classes: tuple[str, ...]
    listing_hash: str
    notes: tuple[str, ...]


def to_rgb(im, path: str):
    """An 8-bit RGB copy of a PIL image, without loss of meaning: the EXIF orientation applied;
    16-bit and 32-bit greyscale scaled to 8 bits (not clipped: PIL's own conversion turns a
    16-bit image white); transparency composited onto black; CMYK and palettes through PIL's
    conversions. UsageError names a mode it cannot convert."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or (im.mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0  # 0-65535 onto 0-255
        elif im.mode == "F":
            lo, hi = values.min(initial=0), values.max(initial=0)
            values = (values - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(values)
        im = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(background, rgba)
    try:
        return im.convert("RGB")
    except ValueError as e:
        raise UsageError(f"image {path}: cannot convert its mode {im.mode!r} to RGB ({e})") from None


MAX_ASPECT = 20  # longer side over shorter side of an image a folder may hold


def _open_image(path: str):
    """The image at ``path`` as 8-bit RGB, or None when it is not an image PIL can read. An image
    over PIL's decompression-bomb limit is a UsageError naming it, not a traceback."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if min(width, height) < 1 or max(width, height) > MAX_ASPECT * min(width, height):
                    raise UsageError(
                        f"image {path} is {width}x{height} pixels: an aspect ratio over {MAX_ASPECT}:1 "
                        "cannot be a training image (resized, it would take gigabytes); remove or crop it"
                    )
                im.load()
                return to_rgb(im, path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UsageError(
            f"image {path} is larger than PIL's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} pixels); "
            "remove it or shrink it"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _read_class_folder(root: str, image_size: int, counts: dict[str, int]) -> dict[str, list[torch.Tensor]]:
    """{class: [image tensors]} for one folder of class sub-folders."""
    from torchvision.datasets.folder import IMG_EXTENSIONS
    from torchvision.transforms import functional as F

    try:
        # hidden entries (.ipynb_checkpoints, .git) are not classes
        classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        classes = []
    if not classes:
        raise UsageError(
            f"data folder {root} has no class sub-folders; expected {root}/<class>/<image files>"
        )
    if len(classes) < 2:
        raise UsageError(
            f"data folder {root} has {len(classes)} class ({', '.join(classes)}); a classifier needs "
            "at least two class sub-folders"
        )
    seen = counts.setdefault("seen", set())  # real paths of folders walked and images read
    out: dict[str, list[torch.Tensor]] = {}
    for cls in classes:
        images = []
        for dirpath, dirnames, files in os.walk(os.path.join(root, cls), followlinks=True):
            real = os.path.realpath(dirpath)
            if ("dir", real) in seen:  # a symlink loop, or a folder linked twice: walked once
                counts["duplicates"] = counts.get("duplicates", 0) + 1
                dirnames[:] = []
                continue
            seen.add(("dir", real))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in sorted(f for f in files if not f.startswith(".")):
                path = os.path.join(dirpath, fname)
                if not fname.lower().endswith(IMG_EXTENSIONS):
                    counts["not_images"] += 1
                    continue
                if not os.path.isfile(path):  # a named pipe, a device, a dangling link: never opened
                    # (counted as unreadable)
                    counts["unreadable"] += 1
                    continue
                if ("file", os.path.realpath(path)) in seen:  # one image in two places (a leak across splits)
                    counts["duplicates"] = counts.get("duplicates", 0) + 1
                    continue
                seen.add(("file", os.path.realpath(path)))
                img = _open_image(path)
                if img is None:
                    counts["unreadable"] += 1
                    continue
                img = F.center_crop(F.resize(img, image_size), [image_size, image_size])
                images.append(F.pil_to_tensor(img))
                counts["listing"].update(  # a name need not be UTF-8: its bytes
                    os.fsencode(os.path.relpath(path, root)) + f"|{os.path.getsize(path)}\n".encode()
                )
        if not images:
            raise UsageError(
                f"class folder {os.path.join(root, cls)} has no readable images "
                f"(extensions: {', '.join(IMG_EXTENSIONS)}); add images or remove the folder"
            )
        out[cls] = images
    return out


def folder_splits(root: str, *, image_size: int, normalize: str, seed: int) -> LoadedFolder:
    if image_size < 8:
        raise UsageError(f"--image-size {image_size}: give at least 8 pixels")
    counts: dict = {"not_images": 0, "unreadable": 0, "listing": hashlib.sha256()}
    present = [d for d in SPLIT_DIRS if os.path.isdir(os.path.join(root, d))]
    if present and "train" not in present:
        raise UsageError(
            f"data folder {root} has {'/'.join(present)}/ but no train/; add {root}/train/<class>/"
        )
    parts = {d: _read_class_folder(os.path.join(root, d), image_size, counts) for d in present} or {
        "all": _read_class_folder(root, image_size, counts)
    }
    first = next(iter(parts))
    classes = tuple(sorted(parts[first]))
    for d, p in parts.items():
        if tuple(sorted(p)) != classes:
            missing = sorted(set(classes) - set(p))
            extra = sorted(set(p) - set(classes))
            raise UsageError(
                f"data folder {os.path.join(root, d)} has other classes than {os.path.join(root, first)}"
                + (f": missing {', '.join(missing)}" if missing else "")
                + (f": extra {', '.join(extra)}" if extra else "")
            )

    def stack(part: dict[str, list[torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        xs = [t for c in classes for t in part[c]]
        ys = [i for i, c in enumerate(classes) for _ in part[c]]
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    def cut(x, y, fractions, what):
        small = [classes[c] for c in np.unique(y.numpy()) if int((y == c).sum()) < len(fractions)]
        if small:
            raise UsageError(
                f"class {small[0]} has too few images to cut {what} from it (need {len(fractions)}); add "
                f"images, or give {root}/train, {root}/val and {root}/test"
            )
        idx = list(_split_indices(y.numpy(), seed, fractions))
        if fractions[2] == 0:  # a two-way cut: whatever rounding left over stays in train
            idx[0] = np.sort(np.concatenate([idx[0], idx[2]]))
        return [(x[i], y[i]) for i in idx]

    if "all" in parts:
        tr, va, te = cut(*stack(parts["all"]), (0.6, 0.2, 0.2), "train/val/test")
    else:
        tr = stack(parts["train"])
        va = stack(parts["val"]) if "val" in parts else None
        te = stack(parts["test"]) if "test" in parts else None
        if va is None and te is None:
            tr, va, te = cut(*tr, (0.6, 0.2, 0.2), "val and test")
        elif va is None:
            tr, va, _ = cut(*tr, (0.8, 0.2, 0.0), "val")
        elif te is None:
            tr, te, _ = cut(*tr, (0.8, 0.2, 0.0), "test")
    xs = [t[0].float() / 255.0 for t in (tr, va, te)]
    if normalize == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    else:  # the training split's own statistics
        mean = xs[0].mean(dim=(0, 2, 3), keepdim=True)
        std = xs[0].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    splits = tuple(Split((x - mean) / std, t[1]) for x, t in zip(xs, (tr, va, te)))
    notes = []
    if counts["not_images"] or counts["unreadable"]:
        notes.append(
            f"data folder {root}: skipped {counts['not_images']} files that are not images and "
            f"{counts['unreadable']} unreadable images"
        )
    if counts.get("duplicates"):
        notes.append(
            f"data folder {root}: {counts['duplicates']} linked folders or images lead to ones already read, "
            "and were read only once (an image in two splits would inflate accuracy)"
        )
    return LoadedFolder(splits, classes, counts["listing"].hexdigest()[:16], tuple(notes))  # type: ignore[arg-type]


def _as_split(obj, spec: str, which: str) -> Split:
    """(x, y) tensors, or a Dataset of (image tensor, label) pairs, as a Split."""
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, torch.Tensor) for t in obj):
        x, y = obj
    elif hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        try:
            pairs = [obj[i] for i in range(len(obj))]
            x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            y = torch.tensor([int(p[1]) for p in pairs])
        except Exception as e:  # noqa: BLE001
            raise UsageError(
                f"data plug-in {spec!r}: its {which} split is not (image tensor, label) pairs: {e}"
            ) from None
    else:
        raise UsageError(
            f"data plug-in {spec!r}: its {which} split is a {type(obj).__name__}; give (x, y) tensors or a "
            "Dataset of (image, label)"
        )
    if x.dim() != 4 or not x.is_floating_point():
        raise UsageError(
            f"data plug-in {spec!r}: {which} images must be a float N x C x H x W tensor, got "
            f"{x.dtype} of shape {tuple(x.shape)}"
        )
    if y.dim() != 1 or len(y) != len(x) or len(y) == 0 or int(y.min()) < 0:
        raise UsageError(f"data plug-in {spec!r}: {which} labels must be N class indices >= 0, one per image")
    return Split(x.float().contiguous(), y.long())


def plugin_splits(spec: str) -> tuple[Split, Split, Split]:
    """The splits a ``package.module:function`` returns: a dict with train/val/test, or a
    (train, val, test) tuple; each (x, y) tensors or a Dataset of (image tensor, label)."""
    out = call_with_accepted(load_plugin(spec, "data"), spec, "data")
    if isinstance(out, dict):
        missing = [k for k in SPLIT_DIRS if k not in out]
        if missing:
            raise UsageError(f"data plug-in {spec!r} returned no {', '.join(missing)} split")
        out = [out[k] for k in SPLIT_DIRS]
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise UsageError(
            f"data plug-in {spec!r} returned {type(out).__name__}; return (train, val, test) or a dict "
            "of them"
        )
    splits = tuple(_as_split(o, spec, w) for o, w in zip(out, SPLIT_DIRS))
    shapes = {tuple(s.x.shape[1:]) for s in splits}
    if len(shapes) != 1:
        raise UsageError(f"data plug-in {spec!r}: the splits' image shapes differ: {sorted(shapes)}")
    return splits  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class Data:
    """The three splits of ``--data`` with what decides them (``settings``), its class names
    and what loading it skipped (``notes``)."""

    name: str
    train: Split
    val: Split
    test: Split
    seed: int
    classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    settings: dict = field(default_factory=dict)

    def fingerprint(self) -> str:
        return data_fingerprint(self.name, self.seed, self.settings, (self.train, self.val, self.test))


DATA_SETTINGS = ("data_plugin", "listing", "image_size", "normalize", "data_id")


def data_fingerprint(name: str, seed: int, settings: dict, splits) -> str:
    """A hash of the data alone (contents, splits and the settings that decide them), so that
    ``verify`` can tell whether the test split it was given is the export's."""
    h = hashlib.sha256()
    h.update(f"{settings.get('data_id', name)}|{seed}".encode())
    for key in sorted(k for k in settings if k in DATA_SETTINGS):
        h.update(f"|{key}={settings[key]}".encode())
    for split in splits:
        h.update(split.x.numpy().tobytes())
        h.update(split.y.numpy().tobytes())
    return h.hexdigest()[:16]


def load_data(
    name: str,
    *,
    seed: int = 0,
    image_size: int | None = None,
    normalize: str = "data",
    data_root: str | None = None,
) -> Data:
    """The splits of ``--data`` (a bundled task, an image folder or a plug-in); UsageError names
    what is wrong. ``data_root``: where a bundled task that reads files finds them."""
    if normalize not in NORMALIZATIONS:
        raise UsageError(f"--normalize {normalize!r}: choose {' or '.join(NORMALIZATIONS)}")
    kind = data_kind(name)
    settings: dict = {}
    classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    if data_root and name not in TASKS_WITH_ROOT:
        raise UsageError(f"--data-root is for {', '.join(TASKS_WITH_ROOT)}; --data {name} does not read it")
    if kind == "bundled":
        train, val, test = TASKS[name](data_root) if name in TASKS_WITH_ROOT else TASKS[name]()
        classes = TASK_CLASSES.get(name) or tuple(str(c) for c in range(int(train.y.max()) + 1))
    elif kind == "plugin":
        train, val, test = plugin_splits(name)
        settings["data_plugin"] = name
    else:
        size = image_size or DEFAULT_IMAGE_SIZE
        loaded = folder_splits(name, image_size=size, normalize=normalize, seed=seed)
        train, val, test = loaded.splits
        classes, notes = loaded.classes, loaded.notes
        settings.update(listing=loaded.listing_hash, image_size=size, normalize=normalize, data_id="folder")
    return Data(name, train, val, test, seed, classes, notes, settings)
