#!/usr/bin/env python3
"""Writes testdata/annotations/: a small DICOM series with an RTSTRUCT and SEGs, and the label maps
pydicom + scikit-image (rtstruct_labels.py) and highdicom make of them, for vismae's tests.

The series is pydicom's CT_small.dcm (MIT) three times at z = -75.7, -72.7, -69.7 mm (new SOP
Instance UIDs, file names out of slice order). The RTSTRUCT draws, in this order:
  Body   a polygon on every slice;
  Ring   an outer and an inner square on the middle slice (the inner one is a hole);
  Spot   a triangle on the top slice that overlaps Body, and a POINT contour (skipped);
  Empty  an ROI with no contour.
Beside the case folder: an RTSTRUCT whose contour lies between two slices (an error), highdicom's
BINARY and FRACTIONAL SEGs of the reference label map, and the reference maps themselves.

Usage: make_annotation_fixtures.py OUT_DIR   (needs pydicom, numpy, scikit-image, nibabel, highdicom)
"""
import copy
import json
import os
import subprocess
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def uid(n):
    return f"2.25.{31415926535897932384626433 + n}"


def main():
    out = sys.argv[1]
    case = os.path.join(out, "case1")
    os.makedirs(case, exist_ok=True)
    src = pydicom.dcmread(os.path.join(ROOT, "testdata/dicom/CT_small.dcm"))
    x0, y0, _ = (float(v) for v in src.ImagePositionPatient)
    dr, dc = (float(v) for v in src.PixelSpacing)
    zs = [-75.7, -72.7, -69.7]
    names = ["ct_b.dcm", "ct_c.dcm", "ct_a.dcm"]  # name order is not slice order
    series_uid, frame_uid = uid(1), uid(2)
    slices = []
    for i, (z, name) in enumerate(zip(zs, names)):
        d = copy.deepcopy(src)
        d.ImagePositionPatient = [f"{x0:.6f}", f"{y0:.6f}", f"{z:.6f}"]
        d.SliceLocation = f"{z:.6f}"
        d.InstanceNumber = i + 1
        d.SOPInstanceUID = uid(10 + i)
        d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
        d.SeriesInstanceUID = series_uid
        d.FrameOfReferenceUID = frame_uid
        d.save_as(os.path.join(case, name))
        slices.append(d)

    def xy(r, c):  # pixel (row, col) -> patient x, y of an axial slice
        return x0 + c * dc, y0 + r * dr

    def contour(kind, pts_rc, z):
        c = Dataset()
        c.ContourGeometricType = kind
        pts = [v for (r, col) in pts_rc for v in (*xy(r, col), z)]
        c.NumberOfContourPoints = len(pts) // 3
        c.ContourData = [f"{v:.6f}" for v in pts]
        return c

    def square(r0, c0, r1, c1):
        return [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]

    rois = [
        ("Body", [contour("CLOSED_PLANAR", [(10.3, 20.2), (15.7, 100.4), (90.1, 110.9), (118.6, 30.5), (60.2, 8.8)], z)
                  for z in zs]),
        ("Ring", [contour("CLOSED_PLANAR", square(30.4, 30.4, 80.6, 80.6), zs[1]),
                  contour("CLOSED_PLANAR", square(45.5, 45.5, 65.5, 65.5), zs[1])]),
        ("Spot", [contour("CLOSED_PLANAR", [(5.0, 5.0), (40.0, 12.0), (12.0, 45.0)], zs[2]),
                  contour("POINT", [(50.0, 50.0)], zs[2])]),
        ("Empty", []),
    ]
    rs = rtstruct(src, slices, series_uid, frame_uid, rois)
    rs.save_as(os.path.join(case, "rs.dcm"), enforce_file_format=True)
    off = rtstruct(src, slices, series_uid, frame_uid,
                   [("Shifted", [contour("CLOSED_PLANAR", square(20, 20, 40, 40), -74.2)])])
    off.save_as(os.path.join(out, "off_slice_rs.dcm"), enforce_file_format=True)

    ref = [sys.executable, os.path.join(HERE, "rtstruct_labels.py"), os.path.join(case, "rs.dcm"), case]
    subprocess.run(ref + [os.path.join(out, "labels.nii.gz")], check=True)
    subprocess.run(ref + [os.path.join(out, "labels_spot_body.nii.gz"), "--roi", "spot", "--roi", "BODY"], check=True)

    lab = np.asarray(nib.load(os.path.join(out, "labels_spot_body.nii.gz")).dataobj)
    arr = np.ascontiguousarray(lab[:, ::-1, :].transpose(2, 1, 0))  # -> [slice, row, col]
    algo = hd.AlgorithmIdentificationSequence(name="reference", version="1", family=codes.cid7162.ArtificialIntelligence)
    descs = [hd.seg.SegmentDescription(segment_number=k, segment_label=name,
                                       segmented_property_category=codes.cid7150.Tissue,
                                       segmented_property_type=codes.SCT.Neoplasm,
                                       algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                       algorithm_identification=algo)
             for k, name in [(1, "Spot"), (2, "Body")]]
    ordered = sorted(slices, key=lambda d: float(d.ImagePositionPatient[2]))
    for kind in ("BINARY", "FRACTIONAL"):
        seg = hd.seg.Segmentation(
            source_images=ordered, pixel_array=arr,
            segmentation_type=getattr(hd.seg.SegmentationTypeValues, kind), segment_descriptions=descs,
            series_instance_uid=uid(100), series_number=100, sop_instance_uid=uid(101 if kind == "BINARY" else 102),
            instance_number=1, manufacturer="reference", manufacturer_model_name="highdicom",
            software_versions=hd.__version__, device_serial_number="0")
        seg.save_as(os.path.join(out, f"seg_{kind.lower()}.dcm"))
    print("wrote", out)


def rtstruct(src, slices, series_uid, frame_uid, rois):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    meta.MediaStorageSOPInstanceUID = uid(50 + len(rois))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rs = Dataset()
    rs.file_meta = meta
    rs.SOPClassUID = meta.MediaStorageSOPClassUID
    rs.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    rs.Modality = "RTSTRUCT"
    for k in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyTime"):
        setattr(rs, k, getattr(src, k, ""))
    rs.SeriesInstanceUID = uid(60 + len(rois))
    rs.StructureSetLabel = "fixture"
    fr = Dataset()
    fr.FrameOfReferenceUID = frame_uid
    st = Dataset()
    st.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    st.ReferencedSOPInstanceUID = src.StudyInstanceUID
    se = Dataset()
    se.SeriesInstanceUID = series_uid
    se.ContourImageSequence = Sequence()
    for d in slices:
        ci = Dataset()
        ci.ReferencedSOPClassUID = d.SOPClassUID
        ci.ReferencedSOPInstanceUID = d.SOPInstanceUID
        se.ContourImageSequence.append(ci)
    st.RTReferencedSeriesSequence = Sequence([se])
    fr.RTReferencedStudySequence = Sequence([st])
    rs.ReferencedFrameOfReferenceSequence = Sequence([fr])
    rs.StructureSetROISequence = Sequence()
    rs.ROIContourSequence = Sequence()
    for number, (name, contours) in enumerate(rois, start=1):
        r = Dataset()
        r.ROINumber = number * 3  # numbers need not be 1..n
        r.ReferencedFrameOfReferenceUID = frame_uid
        r.ROIName = name
        r.ROIGenerationAlgorithm = "MANUAL"
        rs.StructureSetROISequence.append(r)
        c = Dataset()
        c.ReferencedROINumber = number * 3
        c.ROIDisplayColor = [255, 0, 0]
        c.ContourSequence = Sequence(contours)
        rs.ROIContourSequence.append(c)
    return rs


if __name__ == "__main__":
    main()
