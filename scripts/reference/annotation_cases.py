#!/usr/bin/env python3
"""Harder RTSTRUCT cases made from a real one, for check-annotations.sh: OUT/synth (the series and
an RTSTRUCT with three ROIs: the original; `Ring`, an outer and an inner square on one slice, so
a hole, and a square on the next slice; `Box`, a square inside the ring's hole on two slices and a
POINT contour) and OUT/oblique (the series and that RTSTRUCT turned 160 degrees about the axis
(1, 2, 3), so the slices are oblique and their normal points the other way).

Usage: annotation_cases.py SERIES_DIR RS.dcm OUT    (needs: pip install pydicom numpy)
"""
import glob
import os
import shutil
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence


def rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def main():
    series, rs_path, out = sys.argv[1:4]
    rs = pydicom.dcmread(rs_path)
    first = rs.ROIContourSequence[0].ContourSequence
    mid = first[len(first) // 2]
    pts = np.array(mid.ContourData, float).reshape(-1, 3)
    cx, cy, z = pts[:, 0].mean(), pts[:, 1].mean(), pts[0, 2]
    step = 3.0 if len(first) < 2 else abs(float(first[1].ContourData[2]) - float(first[0].ContourData[2])) or 3.0

    def square(h, zz):
        return [v for (x, y) in [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)] for v in (x, y, zz)]

    def add(number, name, contours):
        r = Dataset()
        r.ROINumber = number
        r.ROIName = name
        r.ReferencedFrameOfReferenceUID = rs.StructureSetROISequence[0].ReferencedFrameOfReferenceUID
        r.ROIGenerationAlgorithm = "MANUAL"
        rs.StructureSetROISequence.append(r)
        c = Dataset()
        c.ReferencedROINumber = number
        c.ROIDisplayColor = [255, 0, 0]
        c.ContourSequence = Sequence()
        for kind, p in contours:
            ct = Dataset()
            ct.ContourGeometricType = kind
            ct.NumberOfContourPoints = len(p) // 3
            ct.ContourData = [f"{v:.4f}" for v in p]
            c.ContourSequence.append(ct)
        rs.ROIContourSequence.append(c)

    add(7, "Ring", [("CLOSED_PLANAR", square(20.3, z)), ("CLOSED_PLANAR", square(10.1, z)),
                    ("CLOSED_PLANAR", square(20.3, z + step))])
    add(9, "Box", [("CLOSED_PLANAR", square(5.2, z)), ("CLOSED_PLANAR", square(5.2, z - step)),
                   ("POINT", [cx, cy, z])])
    synth = os.path.join(out, "synth")
    shutil.copytree(series, synth, dirs_exist_ok=True)
    for f in glob.glob(os.path.join(synth, "*")):
        if pydicom.dcmread(f, stop_before_pixels=True).Modality == "RTSTRUCT":
            os.remove(f)
    rs.save_as(os.path.join(synth, "RS_synth.dcm"))

    turn = rotation([1, 2, 3], np.deg2rad(160))
    oblique = os.path.join(out, "oblique")
    os.makedirs(oblique, exist_ok=True)
    for f in glob.glob(os.path.join(synth, "*")):
        ds = pydicom.dcmread(f)
        if ds.Modality == "RTSTRUCT":
            for c in ds.ROIContourSequence:
                for ct in c.ContourSequence:
                    p = np.array(ct.ContourData, float).reshape(-1, 3) @ turn.T
                    ct.ContourData = [f"{v:.8f}" for v in p.ravel()]
        else:
            o = np.array(ds.ImageOrientationPatient, float)
            ds.ImageOrientationPatient = [f"{v:.10f}" for v in np.r_[turn @ o[:3], turn @ o[3:]]]
            ds.ImagePositionPatient = [f"{v:.8f}" for v in turn @ np.array(ds.ImagePositionPatient, float)]
        ds.save_as(os.path.join(oblique, os.path.basename(f)))
    print("wrote", synth, oblique)


if __name__ == "__main__":
    main()
