#!/usr/bin/env python3
"""Compare two NIfTI label maps voxel for voxel (and their affines): exit 1 if they differ.

Usage: compare_labels.py A.nii.gz B.nii.gz     (needs: pip install nibabel numpy)
"""
import sys

import nibabel as nib
import numpy as np

a, b = (nib.load(p) for p in sys.argv[1:3])
x, y = np.asarray(a.dataobj), np.asarray(b.dataobj)
if x.shape != y.shape:
    sys.exit(f"FAIL: shapes {x.shape} and {y.shape}")
differ = int(np.count_nonzero(x != y))
off = float(np.abs(a.affine - b.affine).max())
labels = {int(k): int(np.count_nonzero(x == k)) for k in np.unique(x) if k != 0}
print(f"{sys.argv[1]} vs {sys.argv[2]}: {differ} voxels differ, affines within {off:.2e}, labels {labels}")
if differ or off > 1e-3:
    sys.exit("FAIL")
