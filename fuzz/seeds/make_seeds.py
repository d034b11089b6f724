#!/usr/bin/env python3
"""Writes the small seed files of the fuzz targets that testdata/ has none of (python3 standard
library; Pillow, if installed, adds a JPEG and a TIFF): MetaImage and NRRD volumes (raw, zlib and
gzip data), labelled-set CSV and JSON datalists, and zip-format PyTorch checkpoints whose pickles
are made by Python's own pickler against a stand-in `torch` module (the same opcodes torch.save
writes). All are made here, from nothing, so they carry no licence of their own.

    python3 fuzz/seeds/make_seeds.py            (writes fuzz/seeds/<target>/...)
"""

import collections
import gzip
import io
import os
import pickle
import struct
import sys
import types
import zipfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


def volumes():
    vox = struct.pack("<24h", *range(-12, 12))  # 4 x 3 x 2, int16
    head = (
        "ObjectType = Image\nNDims = 3\nDimSize = 4 3 2\nElementSpacing = 0.5 0.5 2\n"
        "Offset = 0 0 0\nModality = MET_MOD_MR\nElementType = MET_SHORT\n"
    )
    put("mha_nrrd", "raw.mha", (head + "ElementDataFile = LOCAL\n").encode() + vox)
    packed = zlib.compress(vox)
    put(
        "mha_nrrd",
        "zlib.mha",
        (head + f"CompressedData = True\nCompressedDataSize = {len(packed)}\nElementDataFile = LOCAL\n").encode()
        + packed,
    )
    rgb = bytes(range(36))  # 3 channels x 4 x 3
    put(
        "mha_nrrd",
        "rgb.mha",
        b"ObjectType = Image\nNDims = 2\nDimSize = 4 3\nElementNumberOfChannels = 3\n"
        b"ElementType = MET_UCHAR\nElementDataFile = LOCAL\n" + rgb,
    )
    nrrd = (
        "NRRD0004\ntype: short\ndimension: 3\nsizes: 4 3 2\nspace: left-posterior-superior\n"
        "space directions: (0.5,0,0) (0,0.5,0) (0,0,2)\nendian: little\n"
    )
    put("mha_nrrd", "raw.nrrd", (nrrd + "encoding: raw\n\n").encode() + vox)
    put("mha_nrrd", "gzip.nrrd", (nrrd + "encoding: gzip\n\n").encode() + gzip.compress(vox))
    put(
        "mha_nrrd",
        "vector.nrrd",
        b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 3 4 3\nkinds: RGB-color domain domain\nencoding: raw\n\n" + rgb,
    )


def rasters():
    try:
        from PIL import Image
    except ImportError:
        return
    img = Image.frombytes("L", (16, 12), bytes((x * 13 + y * 7) % 256 for y in range(12) for x in range(16)))
    for fmt, name in (("JPEG", "grey.jpg"), ("TIFF", "grey.tif"), ("PNG", "grey.png")):
        b = io.BytesIO()
        img.save(b, fmt)
        put("raster", name, b.getvalue())
    b = io.BytesIO()
    img.convert("RGB").save(b, "JPEG")
    put("raster", "rgb.jpg", b.getvalue())


def labelled():
    put("labelled", "classes.csv", b"image,label,patient_id\na.png,1,p1\nb.png,0,p1\n\"c,d.png\",positive,p2\n")
    put("labelled", "chestxray.csv", b"Image Index,Finding Labels,Patient ID\nx.png,Effusion|Mass,1\ny.png,No Finding,2\n")
    put(
        "labelled",
        "datalist.json",
        b'{"training": [{"image": "img/a.nii.gz", "label": "lab/a.nii.gz"}, '
        b'{"image": ["img/b_0.nii.gz", "img/b_1.nii.gz"], "label": "lab/b.nii.gz", "fold": 1}], '
        b'"labels": {"0": "background", "1": "liver"}}',
    )
    put("labelled", "list.json", b'[{"image": "a.png", "label": 1}, {"image": "b.png", "label": [0, 1]}]')


class _Storage:
    def __init__(self, key, data, cls):
        self.key, self.data, self.cls = key, data, cls


class _Tensor:
    def __init__(self, storage, shape, stride, offset=0):
        self.storage, self.shape, self.stride, self.offset = storage, shape, stride, offset

    def __reduce__(self):
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return (rebuild, (self.storage, self.offset, self.shape, self.stride, False, collections.OrderedDict()))


def _fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("never called: only pickled")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in ("FloatStorage", "LongStorage", "HalfStorage"):
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    torch._utils = utils
    sys.modules["torch"] = torch
    sys.modules["torch._utils"] = utils
    return torch


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", obj.cls, obj.key, "cpu", len(obj.data) // 4)
        return None


def checkpoint(name, root, storages, protocol=2):
    pkl = io.BytesIO()
    _Pickler(pkl, protocol=protocol).dump(root)
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pkl.getvalue())
        z.writestr("archive/byteorder", "little")
        for s in storages:
            z.writestr(f"archive/data/{s.key}", s.data)
        z.writestr("archive/version", "3\n")
    put("pth", name, b.getvalue())


def checkpoints():
    torch = _fake_torch()
    w = _Storage("0", struct.pack("<6f", 0.5, -1, 2, 3, 4, 5), torch.FloatStorage)
    idx = _Storage("1", struct.pack("<3q", 0, 1, 2), torch.LongStorage)
    sd = collections.OrderedDict()
    sd["patch_embed.proj.weight"] = _Tensor(w, (2, 3), (3, 1))
    sd["patch_embed.proj.weight_t"] = _Tensor(w, (3, 2), (1, 3))
    sd["layers.0.relative_position_index"] = _Tensor(idx, (3,), (1,))
    checkpoint("model.pth", {"model": sd, "epoch": 3, "args": ("lr", 1e-3, None, True)}, [w, idx])
    checkpoint("state_dict.pth", {"state_dict": sd}, [w, idx], protocol=4)
    checkpoint("root.pth", sd, [w, idx])


if __name__ == "__main__":
    volumes()
    rasters()
    labelled()
    checkpoints()
    for t in sorted(os.listdir(HERE)):
        p = os.path.join(HERE, t)
        if os.path.isdir(p):
            print(t, len(os.listdir(p)), "files")
