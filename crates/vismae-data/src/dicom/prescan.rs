//! A pre-scan of DICOM Part 10 bytes, run before dicom-rs parses them: it walks every element
//! header without allocating values, the way dicom-rs 0.10 tokenises (dicom-object
//! `FileMetaTable::read_from`, src/meta.rs:591; dicom-parser `DataSetReader::next`,
//! src/dataset/read.rs:345), and checks each declared length against the bytes left and the
//! [`Limits`], the sequence nesting depth, an estimate of the header's in-memory size, and the
//! pixel data the header declares. dicom-rs has no such options: it sizes each value's buffer
//! from the declared length before reading (a 3 KB file declaring a 4 GiB element costs 4 GiB) and
//! recurses per nesting level (20,000 levels overflow the stack). Where dicom-rs does something
//! odd, the scan refuses the file: being stricter than the parser is safe.
//! Validated on 192 real files (none refused that dicom-rs reads) and 200,000 mutants
//! (`/work/research/dicom_bounds.md` records how).

use std::borrow::Cow;
use std::io::Read;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::limits::{Limits, fmt_bytes};

/// Why the scan refused the bytes.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScanError {
    /// Over a [`Limits`] cap (otherwise malformed).
    pub over_limit: bool,
    /// What, with the field and the value.
    pub what: String,
}

fn malformed<T>(at: usize, what: impl std::fmt::Display) -> Result<T, ScanError> {
    Err(ScanError { over_limit: false, what: format!("{what} (at byte {at})") })
}

fn over<T>(
    what: impl std::fmt::Display,
    value: impl std::fmt::Display,
    limit: impl std::fmt::Display,
) -> Result<T, ScanError> {
    Err(ScanError { over_limit: true, what: format!("{what} is {value}, over the limit of {limit}") })
}

/// What the walk learnt about the root-level image attributes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Summary {
    /// Deepest sequence nesting.
    pub max_depth_seen: usize,
    /// Estimated in-memory size of everything but the pixel data.
    pub header_memory: u64,
    rows: Option<u32>,
    columns: Option<u32>,
    samples_per_pixel: Option<u32>,
    bits_allocated: Option<u32>,
    number_of_frames: Option<u64>,
    photometric: Option<String>,
    /// Declared length of native root-level Pixel Data / Float / Double Float Pixel Data.
    native_pixel_len: Option<u64>,
    /// Encapsulated root-level Pixel Data: fragments, not counting the offset table.
    fragments: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Syntax {
    ImplicitLE,
    ExplicitLE,
    ExplicitBE,
}

impl Syntax {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self == Syntax::ExplicitBE { u16::from_be_bytes(a) } else { u16::from_le_bytes(a) }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self == Syntax::ExplicitBE { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) }
    }
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_END: Tag = Tag(0xFFFE, 0xE00D);
const SEQ_END: Tag = Tag(0xFFFE, 0xE0DD);
const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

/// VRs whose explicit-VR length field is 2 bytes (PS3.5 Table 7.1-2; dicom-encoding
/// src/decode/explicit_le.rs:56-81). Every other VR, and any unrecognised VR code (dicom-rs reads
/// it as UN), has 2 reserved bytes and a 4-byte length.
fn short_length(vr: VR) -> bool {
    use VR::*;
    matches!(vr, AE | AS | AT | CS | DA | DS | DT | FL | FD | IS | LO | LT | PN | SH | SL | SS | ST | TM | UI | UL | US)
}

/// Size of one value of the VRs dicom-rs reads as arrays: it reads `len / unit` values but
/// advances its position by `len` (dicom-parser src/stateful/decode.rs:813-829 and siblings).
fn binary_unit(vr: VR) -> u64 {
    use VR::*;
    match vr {
        US | SS | OW => 2,
        UL | SL | FL | OF | OL | AT => 4,
        FD | OD | SV | UV | OV => 8,
        _ => 1,
    }
}

/// VRs that dicom-rs splits on `\` into one `String` per value.
fn multi_string(vr: VR) -> bool {
    use VR::*;
    matches!(vr, AE | AS | PN | SH | LO | UC | UI | IS | DS | DA | TM | DT | CS)
}

/// Rough cost of one node of the in-memory object (BTreeMap slot + `InMemElement`), bytes.
const NODE_COST: u64 = 192;
/// Heap size of one `String` of a multi-valued split.
const STRING_COST: u64 = 24;

struct Header {
    tag: Tag,
    vr: VR,
    len: u32,
    size: usize,
}

fn explicit_header(syn: Syntax, d: &[u8], pos: usize) -> Result<Option<Header>, ScanError> {
    let rest = &d[pos..];
    if rest.len() < 4 {
        return Ok(None); // EOF at a tag: dicom-rs ends the data set here
    }
    let tag = Tag(syn.u16(&rest[0..]), syn.u16(&rest[2..]));
    if tag.0 == 0xFFFE {
        if rest.len() < 8 {
            return malformed(pos, "truncated item or delimiter header");
        }
        return Ok(Some(Header { tag, vr: VR::UN, len: syn.u32(&rest[4..]), size: 8 }));
    }
    if rest.len() < 8 {
        return malformed(pos, format!("truncated header of element {tag}"));
    }
    let vr = VR::from_binary([rest[4], rest[5]]).unwrap_or(VR::UN);
    if short_length(vr) {
        return Ok(Some(Header { tag, vr, len: syn.u16(&rest[6..]) as u32, size: 8 }));
    }
    if rest.len() < 12 {
        return malformed(pos, format!("truncated header of element {tag}"));
    }
    Ok(Some(Header { tag, vr, len: syn.u32(&rest[8..]), size: 12 }))
}

fn implicit_header(d: &[u8], pos: usize) -> Result<Option<Header>, ScanError> {
    let rest = &d[pos..];
    if rest.len() < 4 {
        return Ok(None);
    }
    if rest.len() < 8 {
        return malformed(pos, "truncated element header");
    }
    let s = Syntax::ImplicitLE;
    let tag = Tag(s.u16(&rest[0..]), s.u16(&rest[2..]));
    // dicom-encoding src/decode/implicit_le.rs:96-103
    let vr = if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
        VR::OW
    } else {
        StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()).unwrap_or(VR::UN)
    };
    Ok(Some(Header { tag, vr, len: s.u32(&rest[4..]), size: 8 }))
}

/// Scans `bytes`, a Part 10 stream from its `DICM` magic code on (what vismae hands dicom-rs
/// with `ReadPreamble::Never`).
pub(crate) fn prescan(bytes: &[u8], lim: &Limits) -> Result<Summary, ScanError> {
    // dicom-rs requires the magic code (dicom-object src/meta.rs:595-597)
    if bytes.len() < 4 || &bytes[..4] != b"DICM" {
        return malformed(0, "no DICM magic code: a data set without file meta information is not read");
    }
    let (ts, ds_start) = meta_group(bytes, 4, lim)?;
    let ts = ts.trim_end_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
    let body = &bytes[ds_start..];
    let (syn, data): (Syntax, Cow<[u8]>) = match ts.as_str() {
        "1.2.840.10008.1.2" => (Syntax::ImplicitLE, Cow::Borrowed(body)),
        "1.2.840.10008.1.2.2" => (Syntax::ExplicitBE, Cow::Borrowed(body)),
        // dicom-transfer-syntax-registry src/deflate.rs:13: raw DEFLATE (RFC 1951, no zlib header)
        "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" | "1.2.840.10008.1.2.4.205" => {
            // counted first without keeping it, so a bomb costs no memory; kept only when it fits
            let inflated = std::io::copy(
                &mut flate2::read::DeflateDecoder::new(body).take(lim.max_inflated_bytes + 1),
                &mut std::io::sink(),
            )
            .or_else(|e| malformed(ds_start, format!("damaged deflate stream: {e}")))?;
            if inflated > lim.max_inflated_bytes {
                return over(
                    "the inflated data set",
                    format!("over {}", fmt_bytes(lim.max_inflated_bytes)),
                    fmt_bytes(lim.max_inflated_bytes),
                );
            }
            let mut out = Vec::with_capacity(inflated as usize);
            flate2::read::DeflateDecoder::new(body)
                .take(inflated)
                .read_to_end(&mut out)
                .or_else(|e| malformed(ds_start, format!("damaged deflate stream: {e}")))?;
            (Syntax::ExplicitLE, Cow::Owned(out))
        }
        // every other syntax dicom-rs knows is explicit VR little endian; it refuses unknown ones
        _ => (Syntax::ExplicitLE, Cow::Borrowed(body)),
    };
    let mut summary = Summary::default();
    walk(&data, syn, lim, &mut summary)?;
    check_pixels(&summary, lim, &ts)?;
    Ok(summary)
}

/// Mirrors `FileMetaTable::read_from` (dicom-object src/meta.rs:591-828): explicit VR LE,
/// (0002,0000) first with length 4, then elements until the group length is consumed.
fn meta_group(b: &[u8], mut p: usize, lim: &Limits) -> Result<(String, usize), ScanError> {
    let s = Syntax::ExplicitLE;
    let Some(h) = explicit_header(s, b, p)? else { return malformed(p, "no file meta group") };
    if h.tag != Tag(0x0002, 0x0000) || h.len != 4 {
        return malformed(p, "the file meta group does not start with (0002,0000) of length 4");
    }
    p += h.size;
    if b.len() < p + 4 {
        return malformed(p, "truncated file meta group length");
    }
    let group_len = s.u32(&b[p..]);
    p += 4;
    let mut consumed: u32 = 0;
    let mut ts = None;
    while consumed < group_len {
        let Some(h) = explicit_header(s, b, p)? else { return malformed(p, "truncated file meta group") };
        if h.len == UNDEFINED {
            return malformed(p, format!("undefined length of {} in the file meta group", h.tag));
        }
        let vstart = p + h.size;
        let left = (b.len() - vstart) as u64;
        if h.len as u64 > left {
            return malformed(
                p,
                format!(
                    "file meta element {} declares {} but {} are left",
                    h.tag,
                    fmt_bytes(h.len as u64),
                    fmt_bytes(left)
                ),
            );
        }
        // dicom-rs's caps: 0001 == 2; 0013/16/17/18 <= 16; 0100 <= 64; 0102 <= 64 MiB; the UIDs
        // (0002/0003/0010/0012) are allocated as declared (read_str_body, meta.rs:233-242)
        let cap = match h.tag.1 {
            0x0001 => 2,
            0x0002 | 0x0003 | 0x0010 | 0x0012 | 0x0100 => 64,
            0x0013 | 0x0016 | 0x0017 | 0x0018 => 16,
            _ => lim.max_element_bytes,
        };
        if h.tag.0 == 0x0002 && h.len as u64 > cap {
            return malformed(
                p,
                format!("file meta element {} declares {} (at most {cap})", h.tag, fmt_bytes(h.len as u64)),
            );
        }
        if h.len as u64 > lim.max_element_bytes {
            return over(
                format!("the length of file meta element {}", h.tag),
                fmt_bytes(h.len as u64),
                fmt_bytes(lim.max_element_bytes),
            );
        }
        if h.tag == Tag(0x0002, 0x0010) {
            ts = Some(String::from_utf8_lossy(&b[vstart..vstart + h.len as usize]).into_owned());
        }
        p = vstart + h.len as usize;
        consumed = consumed.saturating_add(h.size as u32).saturating_add(h.len);
    }
    let Some(ts) = ts else { return malformed(p, "no transfer syntax (0002,0010) in the file meta group") };
    Ok((ts, p))
}

#[derive(Clone, Copy, Debug)]
struct Open {
    seq: bool,
    pixel: bool,
    /// logical end (dicom-rs `position` coordinates), None when undefined
    end: Option<u64>,
}

/// Mirrors `DataSetReader::next` (dicom-parser src/dataset/read.rs:345-680).
/// `pos` is the real offset in `d`; `skew` is how far dicom-rs's `position` runs ahead of it
/// (binary values whose length is not a multiple of their unit: it reads fewer bytes than `len`).
fn walk(d: &[u8], syn: Syntax, lim: &Limits, sum: &mut Summary) -> Result<(), ScanError> {
    let mut pos: usize = 0;
    let mut skew: u64 = 0;
    let mut stack: Vec<Open> = Vec::with_capacity(16);
    let mut depth = 0usize; // open non-pixel sequences = build_object recursion depth
    let mut in_seq = false;
    let mut pending = false;
    let mut offset_table_next = false;
    let mut est: u64 = 0;

    let logical = |pos: usize, skew: u64| pos as u64 + skew;
    let item_header = |pos: usize| -> Option<(Tag, u32)> {
        let r = d.get(pos..pos + 8)?;
        Some((Tag(syn.u16(&r[0..]), syn.u16(&r[2..])), syn.u32(&r[4..])))
    };

    loop {
        // every element, item and sequence adds to the header's memory: checked each time round
        if est > lim.max_header_bytes {
            return over(
                format!("the header's estimated size in memory (at byte {pos})"),
                format!("over {}", fmt_bytes(est)),
                fmt_bytes(lim.max_header_bytes),
            );
        }
        // read.rs:356-365 / 706-740: close the items and sequences whose defined length ends here
        if pending {
            if let Some(top) = stack.last().copied()
                && let Some(end) = top.end
            {
                let here = logical(pos, skew);
                if end == here {
                    stack.pop();
                    if top.seq {
                        in_seq = false;
                        if !top.pixel {
                            depth -= 1;
                        }
                    } else {
                        in_seq = true;
                    }
                    continue;
                } else if end < here {
                    return malformed(
                        pos,
                        format!("an item or sequence overruns its length (ends at {end}, value reaches {here})"),
                    );
                }
            }
            pending = false;
        }

        if in_seq {
            // read.rs:368-446: an item, item delimiter or sequence delimiter
            let Some((tag, len)) = item_header(pos) else {
                if stack.last().is_some_and(|t| t.pixel) && d.len() - pos < 8 {
                    break; // read.rs:430-441: EOF inside a pixel sequence ends the object
                }
                return malformed(pos, "the file ends inside a sequence");
            };
            pos += 8;
            match tag {
                ITEM => {
                    let Some(parent) = stack.last().copied() else {
                        return malformed(pos - 8, "an item outside a sequence");
                    };
                    let end = if len == UNDEFINED {
                        if parent.pixel {
                            return malformed(pos - 8, "a pixel data fragment of undefined length");
                        }
                        None
                    } else {
                        let left = (d.len() - pos) as u64;
                        if len as u64 > left {
                            return malformed(
                                pos - 8,
                                format!("an item declares {} but {} are left", fmt_bytes(len as u64), fmt_bytes(left)),
                            );
                        }
                        Some(logical(pos, skew) + len as u64)
                    };
                    stack.push(Open { seq: false, pixel: parent.pixel, end });
                    in_seq = false;
                    if !parent.pixel {
                        est += NODE_COST;
                    }
                    if len == 0 {
                        pending = true;
                    }
                }
                ITEM_END => {
                    if len != 0 {
                        return malformed(pos - 8, "an item delimiter of non-zero length");
                    }
                    stack.pop();
                    in_seq = true;
                    pending = true;
                }
                SEQ_END => {
                    if let Some(t) = stack.pop()
                        && t.seq
                        && !t.pixel
                    {
                        depth -= 1;
                    }
                    in_seq = false;
                    pending = true;
                }
                _ => return malformed(pos - 8, format!("expected an item, found {tag}")),
            }
            continue;
        }

        if let Some(top) = stack.last().copied().filter(|t| !t.seq && t.pixel) {
            // read.rs:447-500: a fragment (or the basic offset table) of encapsulated pixel data
            let Some(end) = top.end else { return malformed(pos, "a pixel data fragment of undefined length") };
            let len = end - logical(pos, skew); // the item's declared length
            if offset_table_next {
                if len % 4 != 0 {
                    return malformed(pos, format!("a basic offset table of {len} bytes, not a multiple of 4"));
                }
                offset_table_next = false;
            } else if depth == 0 && stack.len() == 2 {
                sum.fragments = Some(sum.fragments.unwrap_or(0) + 1);
            }
            pos += len as usize; // checked against the bytes left at the item header
            pending = true;
            continue;
        }

        let hdr = match syn {
            Syntax::ImplicitLE => implicit_header(d, pos)?,
            _ => explicit_header(syn, d, pos)?,
        };
        let Some(h) = hdr else {
            // read.rs:661-671: EOF at a tag ends reading; inside an open sequence dicom-object's
            // build_sequence then fails (mem.rs:2331)
            if !stack.is_empty() {
                return malformed(pos, "the file ends inside a sequence");
            }
            break;
        };
        let at = pos;
        pos += h.size;
        est += NODE_COST;
        let left = (d.len() - pos) as u64;

        if h.vr == VR::SQ || (h.len == UNDEFINED && h.tag != ITEM_END && h.tag != PIXEL_DATA) {
            // read.rs:571-599 (SQ) and 631-641 (any other undefined length opens a sequence)
            if h.len != UNDEFINED && h.len as u64 > left {
                return malformed(
                    at,
                    format!("sequence {} declares {} but {} are left", h.tag, fmt_bytes(h.len as u64), fmt_bytes(left)),
                );
            }
            depth += 1;
            sum.max_depth_seen = sum.max_depth_seen.max(depth);
            if depth > lim.max_depth {
                return over(
                    "the sequence nesting depth",
                    format!("{depth} (at {} in byte {at})", h.tag),
                    lim.max_depth,
                );
            }
            let end = (h.len != UNDEFINED).then(|| logical(pos, skew) + h.len as u64);
            stack.push(Open { seq: true, pixel: false, end });
            in_seq = true;
            if h.len == 0 {
                pending = true;
            }
            continue;
        }
        if h.tag == ITEM_END {
            // read.rs:600-622: ignored at the root, else it closes whatever is open
            if stack.is_empty() {
                continue;
            }
            if let Some(t) = stack.pop()
                && t.seq
                && !t.pixel
            {
                depth -= 1;
            }
            in_seq = true;
            pending = true;
            continue;
        }
        if h.tag == PIXEL_DATA && h.len == UNDEFINED {
            // read.rs:623-630 then 502-549: a pixel sequence, its first item (offset table) at once
            stack.push(Open { seq: true, pixel: true, end: None });
            let Some((tag, len)) = item_header(pos) else {
                return malformed(pos, "truncated encapsulated pixel data");
            };
            pos += 8;
            match tag {
                ITEM => {
                    if len == UNDEFINED {
                        return malformed(pos - 8, "a basic offset table of undefined length");
                    }
                    let left = (d.len() - pos) as u64;
                    if len as u64 > left {
                        return malformed(
                            pos - 8,
                            format!(
                                "the basic offset table declares {} but {} are left",
                                fmt_bytes(len as u64),
                                fmt_bytes(left)
                            ),
                        );
                    }
                    stack.push(Open { seq: false, pixel: true, end: Some(logical(pos, skew) + len as u64) });
                    in_seq = false;
                    if len == 0 {
                        pending = true;
                    } else {
                        offset_table_next = true;
                    }
                    if stack.len() == 2 {
                        sum.fragments = Some(0);
                    }
                }
                SEQ_END => {
                    stack.pop();
                    in_seq = false;
                    if stack.is_empty() {
                        sum.fragments = Some(0);
                    }
                }
                _ => return malformed(pos - 8, format!("encapsulated pixel data starts with {tag}, not an item")),
            }
            continue;
        }

        // a plain defined-length value: read.rs:642-660 then 550-567
        let len = h.len as u64;
        if len > left {
            return malformed(
                at,
                format!("element {} {:?} declares {} but {} are left", h.tag, h.vr, fmt_bytes(len), fmt_bytes(left)),
            );
        }
        let is_pixels = matches!(h.tag, Tag(0x7FE0, 0x0008) | Tag(0x7FE0, 0x0009) | PIXEL_DATA);
        let (cap, field) = if is_pixels {
            (lim.max_image_bytes, "max_image_bytes")
        } else {
            (lim.max_element_bytes, "max_element_bytes")
        };
        if len > cap {
            return over(
                format!("the length of element {} {:?}", h.tag, h.vr),
                fmt_bytes(len),
                format!("{} ({field})", fmt_bytes(cap)),
            );
        }
        let value = &d[pos..pos + len as usize];
        // the header's memory: values, strings buffered then copied, and split on '\'
        if !is_pixels {
            est += len;
            if multi_string(h.vr) {
                est += len + STRING_COST * (1 + value.iter().filter(|&&c| c == b'\\').count() as u64);
            } else if matches!(h.vr, VR::UT | VR::ST | VR::UR | VR::LT) {
                est += len;
            }
            if est > lim.max_header_bytes {
                return over(
                    format!("the header's estimated size in memory (at element {} in byte {at})", h.tag),
                    format!("over {}", fmt_bytes(est)),
                    fmt_bytes(lim.max_header_bytes),
                );
            }
        }
        if stack.is_empty() {
            root_value(syn, h.tag, value, sum, is_pixels);
        }
        let unit = binary_unit(h.vr);
        let read = len - len % unit; // what dicom-rs actually consumes
        pos += read as usize;
        skew += len - read;
        pending = true;
    }
    if est > lim.max_header_bytes {
        return over(
            "the header's estimated size in memory",
            format!("over {}", fmt_bytes(est)),
            fmt_bytes(lim.max_header_bytes),
        );
    }
    sum.header_memory = est;
    Ok(())
}

fn root_value(syn: Syntax, tag: Tag, v: &[u8], sum: &mut Summary, is_pixels: bool) {
    let us = || (v.len() >= 2).then(|| syn.u16(v) as u32);
    let text = || String::from_utf8_lossy(v).trim_matches(|c: char| c.is_whitespace() || c == '\0').to_string();
    match tag {
        Tag(0x0028, 0x0010) => sum.rows = us(),
        Tag(0x0028, 0x0011) => sum.columns = us(),
        Tag(0x0028, 0x0002) => sum.samples_per_pixel = us(),
        Tag(0x0028, 0x0100) => sum.bits_allocated = us(),
        Tag(0x0028, 0x0008) => sum.number_of_frames = text().parse::<i64>().ok().map(|n| n.max(1) as u64),
        Tag(0x0028, 0x0004) => sum.photometric = Some(text()),
        _ if is_pixels => sum.native_pixel_len = Some(v.len() as u64),
        _ => {}
    }
}

/// Native data bytes per pixel sample group: YBR_FULL_422 / YBR_PARTIAL_422 store two chroma
/// samples per two pixels (PS3.3 C.7.6.3.1.2), 2 samples per pixel on average, not 3.
pub(crate) fn native_samples(spp: u64, photometric: Option<&str>) -> u64 {
    if spp == 3 && photometric.is_some_and(|p| p.trim().to_ascii_uppercase().ends_with("_422")) { 2 } else { spp }
}

/// The pixel size rules (PS3.3 C.7.6.3, PS3.5 8.1.1 and A.4) against the limits.
fn check_pixels(s: &Summary, lim: &Limits, ts: &str) -> Result<(), ScanError> {
    let (Some(rows), Some(cols)) = (s.rows, s.columns) else { return Ok(()) };
    let spp = s.samples_per_pixel.unwrap_or(1).max(1) as u128;
    let bits = s.bits_allocated.unwrap_or(16).max(1) as u128;
    let frames = s.number_of_frames.unwrap_or(1).max(1);
    if frames > lim.max_frames {
        return over("Number of Frames (0028,0008)", frames, lim.max_frames);
    }
    let frame_bytes = (rows as u128 * cols as u128 * spp * bits).div_ceil(8);
    if frame_bytes > lim.max_frame_bytes as u128 {
        return over(
            format!("one frame of Rows {rows} x Columns {cols} x Samples per Pixel {spp} x Bits Allocated {bits}"),
            fmt_bytes(frame_bytes as u64),
            format!("{} (max_frame_bytes)", fmt_bytes(lim.max_frame_bytes)),
        );
    }
    if let Some(have) = s.native_pixel_len {
        // 1-bit frames are packed end to end without per-frame padding: multiply first
        let spp = native_samples(spp as u64, s.photometric.as_deref()) as u128;
        let total = (rows as u128 * cols as u128 * spp * bits * frames as u128).div_ceil(8);
        if total > lim.max_image_bytes as u128 {
            return over(
                format!("the pixel data of {frames} frame(s) of {rows} x {cols} x {spp} x {bits} bits"),
                fmt_bytes(total.min(u64::MAX as u128) as u64),
                format!("{} (max_image_bytes)", fmt_bytes(lim.max_image_bytes)),
            );
        }
        if (have as u128) < total {
            return malformed(
                0,
                format!(
                    "truncated pixel data: {} present, the header needs {}",
                    fmt_bytes(have),
                    fmt_bytes(total as u64)
                ),
            );
        }
    }
    if let Some(fragments) = s.fragments {
        // MPEG-2 / MPEG-4 / HEVC (1.2.840.10008.1.2.4.100-108): fragments need not align with frames
        let video = ts
            .strip_prefix("1.2.840.10008.1.2.4.")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (100..=108).contains(&n));
        if fragments == 0 {
            return malformed(0, "encapsulated pixel data without fragments");
        }
        if !video && frames > fragments {
            return malformed(0, format!("{frames} frames declared but only {fragments} fragments of compressed data"));
        }
    }
    Ok(())
}
