#!/usr/bin/env python3
"""Reference PNGs for `vismae convert` on NIfTI volumes, computed with nibabel.

vismae's axial slice z of a volume stored x-fastest is `data[:, ::-1, z].T` (rows run along y,
flipped so anterior is up; columns along x); with no window it is min-max normalised per slice and
written as round(255 * y). The default slice is the middle one (nz // 2) of the first time point.

Usage: volume_reference.py OUT_DIR FILE.nii[.gz]...   (needs: pip install nibabel numpy pillow)
"""
import os
import sys

import nibabel as nib
import numpy as np
from PIL import Image


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for path in sys.argv[2:]:
        data = np.asarray(nib.load(path).get_fdata(dtype=np.float64))
        while data.ndim < 3:
            data = data[..., None]
        if data.ndim == 4:
            data = data[..., 0]
        z = data.shape[2] // 2
        img = data[:, ::-1, z].T
        lo, hi = np.nanmin(img), np.nanmax(img)  # non-finite voxels are left out of the range ...
        y = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)  # ... and written as 0
        name = os.path.basename(path).split(".")[0] + ".png"
        Image.fromarray(np.round(255 * y).astype(np.uint8), mode="L").save(os.path.join(out_dir, name))
        print(name, img.shape)


if __name__ == "__main__":
    main()
