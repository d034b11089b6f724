#!/usr/bin/env python3
"""Reference PNGs for `vismae convert`, computed with pydicom (numpy, pylibjpeg for compressed data).

Semantics (the ones vismae documents):
  values = apply_modality_lut(pixel_array, ds)          # HU for CT; colour arrays come as RGB
  colour -> grey by BT.601 luma (0.299 R + 0.587 G + 0.114 B); palette colour through its LUT
  monochrome with a header window -> pydicom apply_windowing (first window, LINEAR/LINEAR_EXACT/SIGMOID),
      scaled to [0, 1] over its output range; MONOCHROME1 inverted
  colour without a window -> divided by 2**BitsStored - 1
  otherwise -> min-max over the image
  8-bit = round(255 * y)

Usage: convert_reference.py OUT_DIR FILE.dcm...   (needs: pip install pydicom numpy pylibjpeg pylibjpeg-openjpeg pylibjpeg-rle pillow)
"""
import os
import sys

import numpy as np
import pydicom
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_windowing, apply_color_lut


def reference(path):
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        arr = arr[0]
    pi = str(ds.PhotometricInterpretation)
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds).astype(np.float64)
        bits = 16 if arr.max() > 255 else 8
        grey = arr @ np.array([0.299, 0.587, 0.114])
        return np.clip(grey / (2**bits - 1), 0, 1)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        grey = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.clip(grey / (2 ** int(ds.BitsStored) - 1), 0, 1)
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        wc = ds.WindowCenter
        ww = ds.WindowWidth
        wc = float(wc[0] if isinstance(wc, pydicom.multival.MultiValue) else wc)
        ww = float(ww[0] if isinstance(ww, pydicom.multival.MultiValue) else ww)
        if ww >= 1:
            # pydicom maps into its own output range; read that range off the extremes
            out = apply_windowing(values, ds, index=0)
            bounds = apply_windowing(np.array([-1e12, 1e12]), ds, index=0)
            y = (out - bounds[0]) / (bounds[1] - bounds[0])
            if pi == "MONOCHROME1":
                y = 1 - y
            return np.clip(y, 0, 1)
    lo, hi = values.min(), values.max()
    y = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if pi == "MONOCHROME1":
        y = 1 - y
    return y


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for path in sys.argv[2:]:
        y = reference(path)
        png = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        Image.fromarray(np.round(255 * y).astype(np.uint8), mode="L").save(png)
        print(png, y.shape)


if __name__ == "__main__":
    main()
