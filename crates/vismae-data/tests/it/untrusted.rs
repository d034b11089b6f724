//! Untrusted files: hostile headers crafted here (no committed binaries) are refused by the
//! limits before anything is allocated for them, with an error naming the file, the field and
//! the value; compressed streams are inflated only as far as the header needs; and a dataset has
//! one writer at a time.

use std::io::Write;
use std::path::{Path, PathBuf};

use vismae_data::dicom::DicomFile;
use vismae_data::volume::{read_metaimage_with, read_nifti_with, read_nrrd_with};
use vismae_data::{DataError, Limits, Reason, SliceOptions, Source};

use crate::scratch;

/// The preamble, `DICM` and a file meta group naming transfer syntax `ts`.
pub fn dicom_meta(ts: &str) -> Vec<u8> {
    let mut uid = ts.as_bytes().to_vec();
    if uid.len() % 2 == 1 {
        uid.push(0);
    }
    let mut el = vec![2, 0, 0x10, 0, b'U', b'I'];
    el.extend_from_slice(&(uid.len() as u16).to_le_bytes());
    el.extend_from_slice(&uid);
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    out.extend_from_slice(&[2, 0, 0, 0, b'U', b'L', 4, 0]);
    out.extend_from_slice(&(el.len() as u32).to_le_bytes());
    out.extend_from_slice(&el);
    out
}

/// An explicit VR little endian element with a 2-byte length.
pub fn short_el(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// The header of an explicit VR little endian element with a 4-byte length.
pub fn long_el(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], len: u32) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_le_bytes());
}

/// Image attributes of a grey or colour image.
fn image_attrs(f: &mut Vec<u8>, rows: u16, cols: u16, spp: u16, bits: u16, photometric: &str, frames: Option<&str>) {
    short_el(f, 0x0008, 0x0060, b"CS", b"OT");
    short_el(f, 0x0028, 0x0002, b"US", &spp.to_le_bytes());
    let mut pi = photometric.as_bytes().to_vec();
    if pi.len() % 2 == 1 {
        pi.push(b' ');
    }
    short_el(f, 0x0028, 0x0004, b"CS", &pi);
    if let Some(n) = frames {
        short_el(f, 0x0028, 0x0008, b"IS", n.as_bytes());
    }
    short_el(f, 0x0028, 0x0010, b"US", &rows.to_le_bytes());
    short_el(f, 0x0028, 0x0011, b"US", &cols.to_le_bytes());
    short_el(f, 0x0028, 0x0100, b"US", &bits.to_le_bytes());
    short_el(f, 0x0028, 0x0101, b"US", &bits.to_le_bytes());
    short_el(f, 0x0028, 0x0102, b"US", &(bits - 1).to_le_bytes());
    short_el(f, 0x0028, 0x0103, b"US", &0u16.to_le_bytes());
}

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// `depth` nested undefined-length sequences, each holding one undefined-length item.
pub fn nested_sequences(depth: usize) -> Vec<u8> {
    let mut f = dicom_meta(EXPLICIT_LE);
    for _ in 0..depth {
        long_el(&mut f, 0x0040, 0xA730, b"SQ", u32::MAX);
        f.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    for _ in 0..depth {
        f.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    }
    f
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("{e}"));
    p
}

fn refused(r: Result<impl Sized, DataError>, reason: Reason, words: &[&str]) -> DataError {
    let Err(e) = r else { panic!("accepted; wanted {reason:?} naming {words:?}") };
    assert_eq!(e.reason, reason, "{e}");
    for w in words {
        assert!(e.to_string().contains(w), "{w:?} not in: {e}");
    }
    e
}

#[test]
fn dicom_nesting_deeper_than_the_limit_is_refused_before_the_parser_recurses() {
    // 20,000 levels overflow dicom-rs's recursive tree builder (an abort, not an error)
    let p = write("nested.dcm", &nested_sequences(20_000));
    let e = refused(
        DicomFile::open(&p),
        Reason::TooLarge,
        &["nested.dcm", "nesting depth is 65 (at (0040,A730)", "over the limit of 64"],
    );
    assert!(e.message.contains("(0040,A730)"), "{e}");
    // 5 levels (the deepest seen in real files) parse; the file then has no pixel data
    let p = write("nested5.dcm", &nested_sequences(5));
    assert_eq!(DicomFile::open(&p).err().map(|e| e.reason), Some(Reason::NoPixelData));
}

#[test]
fn dicom_lengths_past_the_file_or_over_a_cap_are_refused_unallocated() {
    // a private OB declaring ~4 GiB with 64 bytes present: dicom-rs would zero-fill 4 GiB
    let mut f = dicom_meta(EXPLICIT_LE);
    long_el(&mut f, 0x0009, 0x1010, b"OB", 0xFFFF_FFF0);
    f.extend_from_slice(&[0u8; 64]);
    let p = write("big_ob.dcm", &f);
    let t = std::time::Instant::now();
    refused(
        DicomFile::open(&p),
        Reason::Corrupt,
        &["big_ob.dcm", "(0009,1010)", "4294967280 bytes", "64 bytes are left"],
    );
    assert!(t.elapsed().as_secs_f64() < 1.0, "{:?}", t.elapsed());
    // the same in text (dicom-rs's infallible allocation path)
    let mut f = dicom_meta(EXPLICIT_LE);
    long_el(&mut f, 0x0009, 0x1010, b"UT", 0xFFFF_FFF0);
    f.extend_from_slice(&[0u8; 64]);
    refused(DicomFile::open(&write("big_ut.dcm", &f)), Reason::Corrupt, &["(0009,1010)", "64 bytes are left"]);
    // a value that is present but over the element cap
    let mut f = dicom_meta(EXPLICIT_LE);
    long_el(&mut f, 0x0009, 0x1010, b"OB", 4096);
    f.extend_from_slice(&[7u8; 4096]);
    let p = write("ob_4k.dcm", &f);
    let small = Limits { max_element_bytes: 1000, ..Limits::default() };
    refused(
        DicomFile::open_with(&p, &small),
        Reason::TooLarge,
        &["length of element (0009,1010)", "4096 bytes", "over the limit of 1000 bytes"],
    );
    // a file over the size cap is not read at all
    let tiny = Limits { max_file_bytes: 100, ..Limits::default() };
    refused(Source::open_with(&p, &SliceOptions::default(), &tiny), Reason::TooLarge, &["file size is 4", "100 bytes"]);
}

#[test]
fn dicom_pixel_matrices_beyond_the_data_or_the_limits_are_refused() {
    // 65535 x 65535 x 1000 frames declared, 64 bytes present
    let mut f = dicom_meta(EXPLICIT_LE);
    image_attrs(&mut f, 65535, 65535, 1, 16, "MONOCHROME2", Some("1000"));
    long_el(&mut f, 0x7FE0, 0x0010, b"OW", 0xFFFF_FFFE);
    f.extend_from_slice(&[0u8; 64]);
    refused(DicomFile::open(&write("big_pixels.dcm", &f)), Reason::Corrupt, &["(7FE0,0010)", "64 bytes are left"]);
    // a frame over the frame cap, the data present in full (2 MiB)
    let native = |rows: u16, cols: u16, frames: &str, data: usize| {
        let mut f = dicom_meta(EXPLICIT_LE);
        image_attrs(&mut f, rows, cols, 1, 16, "MONOCHROME2", Some(frames));
        long_el(&mut f, 0x7FE0, 0x0010, b"OW", data as u32);
        f.extend(std::iter::repeat_n(1u8, data));
        f
    };
    let p = write("frame_2m.dcm", &native(1024, 1024, "1", 2 << 20));
    let lim = Limits { max_frame_bytes: 1 << 20, ..Limits::default() };
    refused(
        DicomFile::open_with(&p, &lim),
        Reason::TooLarge,
        &["Rows 1024 x Columns 1024 x Samples per Pixel 1 x Bits Allocated 16", "2097152 bytes", "max_frame_bytes"],
    );
    // all frames together over the image cap
    let p = write("frames_4x.dcm", &native(256, 256, "4", 4 * 256 * 256 * 2));
    let lim = Limits { max_image_bytes: 256 << 10, ..Limits::default() };
    refused(
        DicomFile::open_with(&p, &lim),
        Reason::TooLarge,
        &["element (7FE0,0010) OW is 524288 bytes", "max_image_bytes"],
    );
    assert_eq!(DicomFile::open(&p).map(|d| d.meta.frames).ok(), Some(4));
    // the header declares more than the cap, its data (one frame) does not
    let p = write("frames_4_of_1.dcm", &native(256, 256, "4", 256 * 256 * 2));
    refused(
        DicomFile::open_with(&p, &lim),
        Reason::TooLarge,
        &["4 frame(s) of 256 x 256 x 1 x 16 bits", "max_image_bytes"],
    );
    refused(DicomFile::open(&p), Reason::Corrupt, &["truncated pixel data"]);
    // more frames than the cap
    let lim = Limits { max_frames: 3, ..Limits::default() };
    refused(
        DicomFile::open_with(&p, &lim),
        Reason::TooLarge,
        &["Number of Frames (0028,0008) is 4, over the limit of 3"],
    );
}

#[test]
fn dicom_header_memory_and_deflate_inflation_are_bounded() {
    // one UC of 100,000 backslashes: 100,001 strings once parsed
    let mut f = dicom_meta(EXPLICIT_LE);
    long_el(&mut f, 0x0008, 0x0119, b"UC", 100_000);
    f.extend(std::iter::repeat_n(b'\\', 100_000));
    let p = write("backslashes.dcm", &f);
    let lim = Limits { max_header_bytes: 1 << 20, ..Limits::default() };
    refused(DicomFile::open_with(&p, &lim), Reason::TooLarge, &["estimated size in memory", "(0008,0119)"]);
    // a deflated data set (raw DEFLATE) inflating to 4 MiB
    let mut body = Vec::new();
    long_el(&mut body, 0x0009, 0x1010, b"OB", 4 << 20);
    body.extend(std::iter::repeat_n(0u8, 4 << 20));
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&body).unwrap_or_default();
    let mut f = dicom_meta("1.2.840.10008.1.2.1.99");
    f.extend(z.finish().unwrap_or_default());
    let p = write("deflate_bomb.dcm", &f);
    let lim = Limits { max_inflated_bytes: 1 << 20, ..Limits::default() };
    refused(DicomFile::open_with(&p, &lim), Reason::TooLarge, &["inflated data set", "1048576 bytes"]);
    // a sequence of 10,000 empty items (8 bytes each; dicom-rs builds an object per item), then
    // the end of the file: counted per item, not only at values
    let mut f = dicom_meta(EXPLICIT_LE);
    long_el(&mut f, 0x0040, 0xA730, b"SQ", 0xFFFF_FFFF);
    for _ in 0..10_000 {
        f.extend([0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
    }
    f.extend([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
    let p = write("empty_items.dcm", &f);
    let lim = Limits { max_header_bytes: 1 << 20, ..Limits::default() };
    refused(DicomFile::open_with(&p, &lim), Reason::TooLarge, &["estimated size in memory"]);
}

#[test]
fn native_ybr_full_422_holds_two_samples_per_pixel() {
    // PS3.3 C.7.6.3.1.2: 4:2:2 stores Y Y Cb Cr per two pixels, so 4 x 4 pixels are 32 bytes
    let mut f = dicom_meta(EXPLICIT_LE);
    image_attrs(&mut f, 4, 4, 3, 8, "YBR_FULL_422", None);
    short_el(&mut f, 0x0028, 0x0006, b"US", &0u16.to_le_bytes());
    long_el(&mut f, 0x7FE0, 0x0010, b"OB", 32);
    f.extend(std::iter::repeat_n(128u8, 32));
    let d = DicomFile::open(&write("ybr422.dcm", &f)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((d.meta.rows, d.meta.columns), (4, 4));
    // 3 samples per pixel would need 48 bytes: 24 is truncated
    let mut f = dicom_meta(EXPLICIT_LE);
    image_attrs(&mut f, 4, 4, 3, 8, "YBR_FULL_422", None);
    long_el(&mut f, 0x7FE0, 0x0010, b"OB", 24);
    f.extend(std::iter::repeat_n(128u8, 24));
    refused(DicomFile::open(&write("ybr422_short.dcm", &f)), Reason::Corrupt, &["truncated pixel data"]);
}

/// A NIfTI-1 header (little endian, single file, data at 352) of `dims` and `datatype`.
pub fn nifti_header(dims: [i16; 3], datatype: i16, bitpix: i16) -> Vec<u8> {
    let mut h = vec![0u8; 352];
    h[0..4].copy_from_slice(&348i32.to_le_bytes());
    for (i, d) in [3, dims[0], dims[1], dims[2], 1, 1, 1, 1].iter().enumerate() {
        h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_le_bytes());
    }
    h[70..72].copy_from_slice(&datatype.to_le_bytes());
    h[72..74].copy_from_slice(&bitpix.to_le_bytes());
    for i in 0..4 {
        h[76 + 4 * i..80 + 4 * i].copy_from_slice(&1f32.to_le_bytes());
    }
    h[108..112].copy_from_slice(&352f32.to_le_bytes());
    h[344..348].copy_from_slice(b"n+1\0");
    h
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap_or_default();
    gz.finish().unwrap_or_default()
}

#[test]
fn volume_dimensions_are_checked_before_anything_is_read() {
    let lim = Limits::default();
    let mut f = nifti_header([32767, 32767, 32767], 4, 16);
    f.extend_from_slice(&[0u8; 64]);
    refused(read_nifti_with(&write("huge.nii", &f), &lim), Reason::TooLarge, &["dim[1..4] [32767, 32767, 32767, 1]"]);
    // sizes whose product overflows 64 bits are refused, not wrapped
    let nrrd =
        b"NRRD0004\ntype: short\ndimension: 3\nsizes: 4294967296 4294967296 4294967296\nencoding: raw\n\n\x01\x02";
    refused(read_nrrd_with(&write("huge.nrrd", nrrd), &lim), Reason::TooLarge, &["sizes [4294967296, 4294967296"]);
    let mha = b"ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_SHORT\nElementDataFile = LOCAL\n\x01\x02";
    refused(read_metaimage_with(&write("huge.mha", mha), &lim), Reason::TooLarge, &["DimSize"]);
    // the limit is the caller's: 8 x 8 x 8 voxels are 2 KiB as floats
    let mut f = nifti_header([8, 8, 8], 2, 8);
    f.extend_from_slice(&[1u8; 512]);
    let p = write("small.nii", &f);
    assert!(read_nifti_with(&p, &lim).is_ok());
    refused(read_nifti_with(&p, &Limits { max_image_bytes: 1024, ..lim }), Reason::TooLarge, &["512 samples"]);
}

#[test]
fn compressed_volumes_inflate_no_further_than_their_header_needs() {
    // 8 x 8 x 8 bytes of data, then 16 MiB of zeros, and the stream cut short at the end: read
    // whole it is damaged, read as far as the header needs it is fine
    let mut raw = nifti_header([8, 8, 8], 2, 8);
    raw.extend(std::iter::repeat_n(3u8, 512));
    raw.extend(std::iter::repeat_n(0u8, 16 << 20));
    let mut gz = gzip(&raw);
    gz.truncate(gz.len() - 64);
    let p = write("bomb.nii.gz", &gz);
    let v = read_nifti_with(&p, &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.dims, [8, 8, 8, 1]);
    assert!(v.data.iter().all(|&x| x == 3.0));
    let s = Source::open(&p, &SliceOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.len(), 8);
    // NRRD gzip and MetaImage zlib data alike
    let mut data = vec![5u8; 8];
    data.extend(std::iter::repeat_n(0u8, 16 << 20));
    let mut nrrd = b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: gzip\n\n".to_vec();
    let mut z = gzip(&data);
    z.truncate(z.len() - 64);
    nrrd.extend(z);
    let v = read_nrrd_with(&write("bomb.nrrd", &nrrd), &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.data, vec![5.0; 8]);
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&data).unwrap_or_default();
    let mut z = enc.finish().unwrap_or_default();
    z.truncate(z.len() - 64);
    let mut mha = b"ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nCompressedData = True\nElementDataFile = LOCAL\n".to_vec();
    mha.extend(z);
    let v = read_metaimage_with(&write("bomb.mha", &mha), &Limits::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v.data, vec![5.0; 8]);
}

/// A valid PNG whose IHDR then claims `w` x `h` (CRC recomputed).
pub fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut png = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_raw(2, 2, vec![0, 1, 2, 3])
        .map(|i| i.write_to(&mut png, image::ImageFormat::Png))
        .transpose()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut b = png.into_inner();
    // signature (8), IHDR length (4), "IHDR" (4), width, height, 5 more bytes, CRC over type + data
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&b[12..29]);
    b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    b
}

#[test]
fn raster_dimensions_are_checked_before_decoding() {
    let p = write("huge.png", &png_claiming(65535, 65535));
    refused(
        Source::open(&p, &SliceOptions::default()),
        Reason::TooLarge,
        &["huge.png", "width x height 65535 x 65535"],
    );
    let p = write("small.png", &png_claiming(2, 2));
    assert!(Source::open(&p, &SliceOptions::default()).is_ok());
}

#[test]
fn ingest_skips_hostile_files_and_refuses_a_second_writer() {
    use vismae_data::dataset::ingest::{IngestOptions, ingest};
    let src = scratch("hostile-src");
    let _ = std::fs::remove_dir_all(&src);
    std::fs::create_dir_all(&src).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(src.join("nested.dcm"), nested_sequences(20_000)).unwrap_or_default();
    std::fs::write(src.join("huge.png"), png_claiming(65535, 65535)).unwrap_or_default();
    std::fs::write(src.join("fine.png"), png_claiming(2, 2)).unwrap_or_default();
    let root = scratch("hostile-ds");
    let _ = std::fs::remove_dir_all(&root);
    let opts = IngestOptions { size: 16, jobs: 2, ..Default::default() };
    let report = ingest(std::slice::from_ref(&src), &root, &opts, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.skipped.get(&Reason::TooLarge), Some(&2), "{report:?}");
    assert_eq!(report.ingested_total(), 1);
    // a dataset held by another writer (here: this process, through its lock) is refused by pid
    let held = vismae_run::DirLock::acquire(&root).unwrap_or_else(|e| panic!("{e}"));
    let e = refused(
        ingest(std::slice::from_ref(&src), &root, &opts, &|_| {}),
        Reason::InUse,
        &[&format!("pid {}", std::process::id())],
    );
    assert!(e.path == root, "{e}");
    drop(held);
    let again = ingest(&[src], &root, &opts, &|_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.already_present, 1);
    // a folder that is not a dataset is left untouched: no lock file is written into it
    let other = scratch("hostile-not-a-dataset");
    std::fs::create_dir_all(&other).unwrap_or_default();
    std::fs::write(other.join("notes.txt"), "mine").unwrap_or_default();
    refused(ingest(&[scratch("hostile-src")], &other, &opts, &|_| {}), Reason::BadArgument, &["not a vismae dataset"]);
    assert!(!Path::new(&other.join(".lock")).exists());
}
