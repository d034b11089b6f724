#!/usr/bin/env python3
"""Write a DICOM SEG with highdicom from a label map made by rtstruct_labels.py (for testing
vismae's SEG reader on highdicom's output).

Usage: write_seg_highdicom.py LABELS.nii.gz SERIES_DIR OUT.dcm [BINARY|FRACTIONAL|LABELMAP]
       (needs: pip install highdicom pydicom numpy nibabel)
"""
import json
import os
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rtstruct_labels import load_series  # noqa: E402


def main():
    nii, series_dir, out = sys.argv[1:4]
    kind = sys.argv[4] if len(sys.argv) > 4 else "BINARY"
    names = json.load(open(nii[:-7] + ".json" if nii.endswith(".nii.gz") else os.path.splitext(nii)[0] + ".json"))
    slices, *_ = load_series(series_dir, names["series_uid"])
    sources = [pydicom.dcmread(s.filename) for s in slices]
    labels = np.asarray(nib.load(nii).dataobj)  # [x, y, z]
    frames = np.ascontiguousarray(labels[:, ::-1, :].transpose(2, 1, 0))  # [slice, row, col]
    algorithm = hd.AlgorithmIdentificationSequence(name="reference", version="1",
                                                   family=codes.cid7162.ArtificialIntelligence)
    segments = [hd.seg.SegmentDescription(segment_number=int(k), segment_label=v,
                                          segmented_property_category=codes.cid7150.Tissue,
                                          segmented_property_type=codes.SCT.Neoplasm,
                                          algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                                          algorithm_identification=algorithm)
                for k, v in names["labels"].items()]
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=frames,
                              segmentation_type=getattr(hd.seg.SegmentationTypeValues, kind),
                              segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=100,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="reference",
                              manufacturer_model_name="highdicom", software_versions=hd.__version__,
                              device_serial_number="0")
    seg.save_as(out)
    print(f"wrote {out}: {kind}, {seg.NumberOfFrames} frames")


if __name__ == "__main__":
    main()
