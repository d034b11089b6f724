#!/usr/bin/env python3
"""Reference label map for vismae's RTSTRUCT import, computed with pydicom + scikit-image.

Rasterises the ROIs of an RTSTRUCT onto the grid of the CT/MR series it references and writes a
uint8 NIfTI label map plus a JSON sidecar (OUT.json: {"labels": {"1": "NAME", ...}, "series_uid"}).

Conventions (they match vismae's own import; change both together):
  * The series is every file in SERIES_DIR whose SeriesInstanceUID is the one the RTSTRUCT
    references (ReferencedFrameOfReferenceSequence/.../RTReferencedSeriesSequence); others are ignored.
  * Slices are sorted ascending by dot(ImagePositionPatient, n), n = row_dir x col_dir, ties by
    InstanceNumber (o = ImageOrientationPatient, row_dir = o[0:3], col_dir = o[3:6]).
  * Voxel (x, y, z): x = column index, y = Rows-1-row index (rows stored bottom-up), z = slice order.
  * Affine (RAS, written as sform and qform, code 1), (dr, dc) = PixelSpacing, p0 = first slice
    position, step = (p_last - p0) / (n - 1), s = (-1, -1, +1):
      A[i] = s[i] * (row_dir[i]*dc, -col_dir[i]*dr, step[i], p0[i] + (Rows-1)*dr*col_dir[i]).
  * Label k (1-based) = k-th item of StructureSetROISequence, or the k-th --roi NAME
    (case-insensitive exact match); later labels overwrite earlier ones where they overlap.
  * Each CLOSED_PLANAR contour (POINT contours are skipped) goes to the slice whose position is
    within 1/4 of the slice spacing of dot(point, n) (mean over its points; error if none). Points
    become continuous (row, col) by least squares on p = P0_slice + col*dc*row_dir + row*dr*col_dir
    and are filled with skimage.draw.polygon (pixel centres inside); the contours of one ROI on one
    slice combine by XOR (even-odd rule, so inner contours are holes).

Usage: rtstruct_labels.py RS.dcm SERIES_DIR OUT.nii.gz [--roi NAME ...]
       (needs: pip install pydicom numpy scikit-image nibabel)
"""
import argparse
import json
import os
import sys

import nibabel as nib
import numpy as np
import pydicom
from skimage.draw import polygon


def referenced_series_uid(rs):
    for fr in rs.get("ReferencedFrameOfReferenceSequence", []):
        for st in fr.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                return se.SeriesInstanceUID
    sys.exit("RTSTRUCT references no series (RTReferencedSeriesSequence missing)")


def load_series(series_dir, uid):
    slices = []
    for name in sorted(os.listdir(series_dir)):
        path = os.path.join(series_dir, name)
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if ds.get("SeriesInstanceUID") == uid and "ImagePositionPatient" in ds:
            slices.append(ds)
    if not slices:
        sys.exit(f"no slices of series {uid} in {series_dir}")
    o = np.array(slices[0].ImageOrientationPatient, float)
    n = np.cross(o[:3], o[3:])
    slices.sort(key=lambda d: (float(np.dot(np.array(d.ImagePositionPatient, float), n)),
                               int(d.get("InstanceNumber", 0) or 0)))
    return slices, o[:3], o[3:], n


def geometry(slices, row_dir, col_dir, n):
    """Slice positions (n x 3, LPS), slice step (LPS) and the RAS affine of the sorted series."""
    rows = int(slices[0].Rows)
    dr, dc = (float(v) for v in slices[0].PixelSpacing)
    pos = np.array([np.array(d.ImagePositionPatient, float) for d in slices])
    p0 = pos[0]
    if len(slices) > 1:
        step = (pos[-1] - p0) / (len(slices) - 1)
    else:
        step = n * float(slices[0].get("SpacingBetweenSlices") or slices[0].get("SliceThickness") or 1.0)
    affine = np.eye(4)
    for i, s in enumerate((-1.0, -1.0, 1.0)):
        affine[i] = [s * row_dir[i] * dc, s * -col_dir[i] * dr, s * step[i],
                     s * (p0[i] + (rows - 1) * dr * col_dir[i])]
    return pos, step, affine


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rtstruct")
    ap.add_argument("series_dir")
    ap.add_argument("out")
    ap.add_argument("--roi", action="append", default=[], metavar="NAME")
    args = ap.parse_args()

    rs = pydicom.dcmread(args.rtstruct)
    uid = referenced_series_uid(rs)
    slices, row_dir, col_dir, n = load_series(args.series_dir, uid)
    rows, cols, nz = int(slices[0].Rows), int(slices[0].Columns), len(slices)
    dr, dc = (float(v) for v in slices[0].PixelSpacing)
    pos, step, affine = geometry(slices, row_dir, col_dir, n)
    along = pos @ n  # slice positions along the normal, ascending
    tol = abs(float(np.dot(step, n))) / 4

    rois = list(rs.StructureSetROISequence)
    if args.roi:
        by_name = {r.ROIName.lower(): r for r in rois}
        missing = [name for name in args.roi if name.lower() not in by_name]
        if missing:
            sys.exit(f"ROI(s) not in RTSTRUCT: {missing}; have {[r.ROIName for r in rois]}")
        rois = [by_name[name.lower()] for name in args.roi]
    contours_of = {int(c.ReferencedROINumber): c.get("ContourSequence", [])
                   for c in rs.get("ROIContourSequence", [])}

    basis = np.stack([dc * row_dir, dr * col_dir], axis=1)  # 3x2: (col, row) -> patient offset
    labels = np.zeros((rows, cols, nz), np.uint8)  # indexed [row, col, slice] while filling
    for k, roi in enumerate(rois, start=1):
        masks = {}
        for ci, c in enumerate(contours_of.get(int(roi.ROINumber), [])):
            kind = c.get("ContourGeometricType", "")
            if kind == "POINT":
                continue
            if kind != "CLOSED_PLANAR":
                print(f"warning: ROI {roi.ROIName!r} contour {ci}: skipping {kind} contour", file=sys.stderr)
                continue
            pts = np.array(c.ContourData, float).reshape(-1, 3)
            d = np.abs(along - float(np.mean(pts @ n)))
            z = int(np.argmin(d))
            if d[z] > tol:
                sys.exit(f"ROI {roi.ROIName!r} contour {ci}: position {np.mean(pts @ n):.3f} is on no slice "
                         f"(nearest {along[z]:.3f}, tolerance {tol:.3f})")
            cr, *_ = np.linalg.lstsq(basis, (pts - pos[z]).T, rcond=None)  # rows of cr: col, row
            fill = np.zeros((rows, cols), bool)
            fill[polygon(cr[1], cr[0], (rows, cols))] = True
            masks[z] = masks.get(z, np.zeros((rows, cols), bool)) ^ fill
        for z, m in masks.items():
            labels[:, :, z][m] = k

    data = np.ascontiguousarray(labels[::-1].transpose(1, 0, 2))  # -> [x=col, y=Rows-1-row, z]
    img = nib.Nifti1Image(data, affine)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(affine, code=1)
    img.set_data_dtype(np.uint8)
    nib.save(img, args.out)

    side = args.out[:-7] if args.out.endswith(".nii.gz") else os.path.splitext(args.out)[0]
    with open(side + ".json", "w") as f:
        json.dump({"labels": {str(k): r.ROIName for k, r in enumerate(rois, start=1)}, "series_uid": uid},
                  f, indent=2)
    for k, r in enumerate(rois, start=1):
        print(f"{k}\t{r.ROIName}\t{int(np.count_nonzero(data == k))} voxels")


if __name__ == "__main__":
    main()
