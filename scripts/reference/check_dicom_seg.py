#!/usr/bin/env python3
"""Check a DICOM SEG written by vismae against a NIfTI label map, with highdicom and pydicom.

Reads SEG.dcm with highdicom.seg.segread (and pydicom.dcmread, fully parsed), checks that it
references instances of the series in SERIES_DIR (same SeriesInstanceUID and FrameOfReferenceUID,
every referenced SOP instance in the series), rebuilds a label volume and asserts it equals
LABELS.nii.gz voxel for voxel. Geometry and slice order are those of rtstruct_labels.py (x = column,
y = Rows-1-row, z = slices ascending along row_dir x col_dir); segment k is label k.

Each frame goes to its source slice by the ReferencedSOPInstanceUID in its DerivationImageSequence/
SourceImageSequence, else by its PlanePositionSequence ImagePositionPatient. BINARY and FRACTIONAL
(value > half the maximum) frames set their ReferencedSegmentNumber (per-frame, or shared); LABELMAP frames carry the
segment numbers themselves. Exits non-zero on any mismatch.

Usage: check_dicom_seg.py SEG.dcm LABELS.nii.gz SERIES_DIR
       (needs: pip install highdicom pydicom numpy nibabel scikit-image)
"""
import json
import os
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rtstruct_labels import geometry, load_series  # noqa: E402

errors = []


def check(ok, msg):
    if not ok:
        errors.append(msg)
        print("MISMATCH:", msg)
    return ok


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__.split("\n\n")[-1])
    seg_path, nii_path, series_dir = sys.argv[1:]

    ds = pydicom.dcmread(seg_path)  # plain pydicom parse, every element and sequence
    ds.walk(lambda d, e: e.value)
    seg = hd.seg.segread(seg_path)
    print(f"SOP class {seg.SOPClassUID} ({seg.SOPClassUID.name}), {seg.SegmentationType}, "
          f"{seg.NumberOfFrames} frames, {seg.Rows}x{seg.Columns}")

    ref = seg.ReferencedSeriesSequence[0]
    slices, row_dir, col_dir, n = load_series(series_dir, ref.SeriesInstanceUID)
    pos, step, affine = geometry(slices, row_dir, col_dir, n)
    rows, cols = int(slices[0].Rows), int(slices[0].Columns)
    index_of = {s.SOPInstanceUID: z for z, s in enumerate(slices)}
    refd = [r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence]
    check(all(u in index_of for u in refd), "ReferencedSeriesSequence names instances not in the series")
    print(f"references series {ref.SeriesInstanceUID}: {len(refd)} of {len(slices)} instances")
    check(seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID, "FrameOfReferenceUID differs from the series")
    check((int(seg.Rows), int(seg.Columns)) == (rows, cols), "Rows/Columns differ from the series")
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" in shared:
        o = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        check(np.allclose(o, np.r_[row_dir, col_dir], atol=1e-4), "ImageOrientationPatient differs")

    for s in seg.SegmentSequence:
        algo = s.get("SegmentationAlgorithmIdentificationSequence") or []
        ai = "; ".join(f"{a.get('AlgorithmName')} {a.get('AlgorithmVersion')} "
                       f"({a.AlgorithmFamilyCodeSequence[0].CodeMeaning})" for a in algo)
        print(f"segment {s.SegmentNumber}: {s.SegmentLabel!r} {s.SegmentAlgorithmType}"
              f"{' ' + s.get('SegmentAlgorithmName') if s.get('SegmentAlgorithmName') else ''}"
              f"{' [' + ai + ']' if ai else ''}")

    frames = np.asarray(seg.pixel_array)
    if frames.ndim == 2:
        frames = frames[None]
    labelmap = seg.SegmentationType == "LABELMAP"
    thresh = float(seg.get("MaximumFractionalValue", 1)) / 2 if seg.SegmentationType == "FRACTIONAL" else 0
    vol = np.zeros((rows, cols, len(slices)), np.uint8)  # [row, col, slice] while filling
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        z = None
        for der in fg.get("DerivationImageSequence", []):
            for src in der.get("SourceImageSequence", []):
                uid = src.ReferencedSOPInstanceUID
                if check(uid in index_of, f"frame {i + 1} derives from {uid}, not in the series"):
                    z = index_of[uid]
        if "PlanePositionSequence" in fg:
            p = np.array(fg.PlanePositionSequence[0].ImagePositionPatient, float)
            d = np.linalg.norm(pos - p, axis=1)
            if z is None:
                z = int(np.argmin(d))
            check(d[z] < 1e-3 * max(1.0, np.abs(p).max()),
                  f"frame {i + 1} position {p.tolist()} is not its source slice's {pos[z].tolist()}")
        if not check(z is not None, f"frame {i + 1} has neither a source image nor a plane position"):
            continue
        if labelmap:
            m = frames[i] > 0
            vol[:, :, z][m] = frames[i][m]
        else:
            sid = fg.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence
            k = int(sid[0].ReferencedSegmentNumber)
            vol[:, :, z][frames[i] > thresh] = k
    vol = vol[::-1].transpose(1, 0, 2)  # -> [x=col, y=Rows-1-row, z]

    img = nib.load(nii_path)
    labels = np.asarray(img.dataobj)
    if check(labels.shape == vol.shape, f"NIfTI shape {labels.shape} != series grid {vol.shape}"):
        diff = labels != vol
        check(not diff.any(), f"{int(diff.sum())} voxels differ (first at x,y,z={np.argwhere(diff)[:1].tolist()})")
        for k in sorted((set(np.unique(labels)) | set(np.unique(vol))) - {0}):
            print(f"label {k}: NIfTI {int((labels == k).sum())} voxels, SEG {int((vol == k).sum())} voxels")
        check(np.allclose(img.affine, affine, atol=1e-3), f"NIfTI affine is not the series affine:\n{img.affine}")
    side = nii_path[:-7] + ".json" if nii_path.endswith(".nii.gz") else os.path.splitext(nii_path)[0] + ".json"
    if os.path.exists(side):
        names = json.load(open(side))["labels"]
        got = {str(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence if s.SegmentNumber != 0}
        if got != names:
            print(f"note: segment labels {got} differ from {os.path.basename(side)} {names}")

    if errors:
        sys.exit(f"FAIL: {len(errors)} mismatch(es)")
    print(f"PASS: {seg_path} matches {nii_path} ({int((vol > 0).sum())} labelled voxels, "
          f"{seg.NumberOfFrames} frames)")


if __name__ == "__main__":
    main()
