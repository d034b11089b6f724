#!/usr/bin/env python3
"""Writes small hostile image files into OUTDIR (python3 standard library only), one per way an
untrusted header can make a reader allocate or recurse without bound: DICOM (deep nesting, lengths
past the file, a huge pixel matrix, header amplification, a deflate bomb), NIfTI/MetaImage/NRRD
(huge dimensions, gzip bombs), PNG/JPEG (huge dimensions) and PyTorch checkpoints (pickles that
nest, double or hold themselves, a zip bomb, a tensor far larger than its storage). Used by
scripts/peak-memory.sh; the Rust tests craft their own (crates/vismae-data/tests/it/untrusted.rs,
crates/vismae-weights/src/pth.rs).

    python3 scripts/craft-hostile.py OUTDIR
"""

import os
import struct
import sys
import zlib
import io
import zipfile


def dicom_meta(ts="1.2.840.10008.1.2.1"):
    uid = ts.encode() + (b"\0" if len(ts) % 2 else b"")
    el = struct.pack("<HH2sH", 2, 0x10, b"UI", len(uid)) + uid
    return b"\0" * 128 + b"DICM" + struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(el)) + el


def short(group, elem, vr, value):
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def long(group, elem, vr, length):
    return struct.pack("<HH2sHI", group, elem, vr, 0, length)


def image_attrs(rows, cols, frames, bits=16):
    return (
        short(0x0008, 0x0060, b"CS", b"OT")
        + short(0x0028, 0x0002, b"US", struct.pack("<H", 1))
        + short(0x0028, 0x0004, b"CS", b"MONOCHROME2 ")
        + short(0x0028, 0x0008, b"IS", frames.encode())
        + short(0x0028, 0x0010, b"US", struct.pack("<H", rows))
        + short(0x0028, 0x0011, b"US", struct.pack("<H", cols))
        + short(0x0028, 0x0100, b"US", struct.pack("<H", bits))
        + short(0x0028, 0x0101, b"US", struct.pack("<H", bits))
        + short(0x0028, 0x0102, b"US", struct.pack("<H", bits - 1))
        + short(0x0028, 0x0103, b"US", struct.pack("<H", 0))
    )


def deflate_zeros(n, wbits):
    """n zero bytes compressed (raw DEFLATE for wbits -15, gzip for 31), streamed."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    chunk = b"\0" * (1 << 20)
    out = []
    for _ in range(n >> 20):
        out.append(c.compress(chunk))
    out.append(c.compress(b"\0" * (n & ((1 << 20) - 1))))
    out.append(c.flush())
    return b"".join(out)


def nifti_header(dims, datatype, bitpix):
    h = bytearray(352)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, dims[0], dims[1], dims[2], 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", h, 108, 352.0)
    struct.pack_into("<f", h, 112, 1.0)
    h[344:348] = b"n+1\0"
    return bytes(h)


def png(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0\0\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg(width, height):
    # SOI, a quantisation table, a baseline frame header claiming width x height, EOI
    dqt = b"\xff\xdb" + struct.pack(">H", 67) + b"\x00" + bytes([1] * 64)
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + dqt + sof + b"\xff\xd9"


def files():
    yield "dicom_nested_20000.dcm", dicom_meta() + (
        long(0x0040, 0xA730, b"SQ", 0xFFFFFFFF) + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ) * 20000 + (b"\xfe\xff\x0d\xe0\0\0\0\0\xfe\xff\xdd\xe0\0\0\0\0") * 20000
    yield "dicom_private_ob_4gib.dcm", dicom_meta() + image_attrs(64, 64, "1") + long(
        0x0009, 0x1010, b"OB", 0xFFFFFFF0
    ) + b"\0" * 2800
    yield "dicom_private_ut_4gib.dcm", dicom_meta() + long(0x0009, 0x1010, b"UT", 0xFFFFFFF0) + b"\0" * 64
    yield "dicom_pixels_65535x65535x1000.dcm", dicom_meta() + image_attrs(65535, 65535, "1000") + long(
        0x7FE0, 0x0010, b"OW", 0xFFFFFFFE
    ) + b"\0" * 64
    n = 20_000_000
    yield "dicom_backslashes_20m.dcm", dicom_meta() + long(0x0008, 0x0119, b"UC", n) + b"\\" * n
    yield "dicom_million_empty_elements.dcm", dicom_meta() + b"".join(
        short(0x0009 + 2 * (i // 60000), 0x1000 + i % 60000, b"LO", b"") for i in range(1_000_000)
    )
    body = long(0x0009, 0x1010, b"OB", 600 << 20)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [bomb.compress(body)]
    chunk = b"\0" * (1 << 20)
    for _ in range(600):
        parts.append(bomb.compress(chunk))
    parts.append(bomb.flush())
    yield "dicom_deflate_bomb_600mib.dcm", dicom_meta("1.2.840.10008.1.2.1.99") + b"".join(parts)
    yield "nifti_dims_32767x3.nii", nifti_header((32767, 32767, 32767), 4, 16) + b"\0" * 64
    yield "nifti_gz_bomb_1gib.nii.gz", deflate_zeros_after(nifti_header((64, 64, 64), 4, 16), 1 << 30)
    yield "nifti_gz_dims_32767x3.nii.gz", gzip(nifti_header((32767, 32767, 32767), 4, 16) + b"\0" * 64)
    yield "mha_dimsize_huge.mha", b"ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_SHORT\nElementDataFile = LOCAL\n" + b"\0" * 64
    yield "mha_zlib_bomb_1gib.mha", b"ObjectType = Image\nNDims = 3\nDimSize = 64 64 64\nElementType = MET_SHORT\nCompressedData = True\nElementDataFile = LOCAL\n" + deflate_zeros(1 << 30, 15)
    yield "nrrd_sizes_overflow.nrrd", b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4294967296 4294967296 4294967296\nencoding: raw\n\n" + b"\0" * 64
    yield "nrrd_gzip_bomb_1gib.nrrd", b"NRRD0004\ntype: short\ndimension: 3\nsizes: 64 64 64\nencoding: gzip\n\n" + deflate_zeros(1 << 30, 31)
    yield "png_65535x65535.png", png(65535, 65535)
    yield "jpeg_65535x65535.jpg", jpeg(65535, 65535)


def checkpoint(pkl, method=zipfile.ZIP_STORED):
    """A zip-format PyTorch checkpoint holding only `pkl` as its pickle."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", method) as z:
        z.writestr("archive/data.pkl", pkl)
    return b.getvalue()


def pickles():
    yield "pth_nested_tuples_4m.pth", checkpoint(b"\x80\x02)" + b"\x85" * 4_000_000 + b".")
    yield "pth_doubling_64.pth", checkpoint(b"\x80\x02)" + b"2\x86" * 64 + b".")
    cyclic = b"\x80\x02]q\x00h\x00aK\x01K\x02s."
    yield "pth_cyclic_list.pth", checkpoint(cyclic)
    yield "pth_zip_bomb_1gib.pth", checkpoint(b"\x80\x02" + b"N" * (1 << 30) + b".", zipfile.ZIP_DEFLATED)
    # a tensor of 10^12 elements on a 4-element storage (stride 0)
    pkl = (
        b"\x80\x02}X\x01\x00\x00\x00w"
        + b"ctorch._utils\n_rebuild_tensor_v2\n("
        + b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ"
        + b"K\x00J\x40\x42\x0f\x00J\x40\x42\x0f\x00\x86K\x00K\x00\x86\x89)tRs."
    )
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        z.writestr("archive/data/0", b"\0" * 16)
    yield "pth_stride0_1e12.pth", b.getvalue()


def gzip(data):
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def deflate_zeros_after(head, n):
    """head, then n zero bytes, as one gzip stream."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [c.compress(head)]
    chunk = b"\0" * (1 << 20)
    for _ in range(n >> 20):
        out.append(c.compress(chunk))
    out.append(c.flush())
    return b"".join(out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in list(files()) + list(pickles()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
        print(f"{name}\t{len(data)}")


if __name__ == "__main__":
    main()
