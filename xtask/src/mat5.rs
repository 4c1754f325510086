//! A small reader for MATLAB Level 5 MAT-files, enough for SBD's `cls/*.mat`.
//!
//! Why hand-written: the `matfile` crate (0.5) reads numeric arrays only, while SBD stores the
//! labels inside a struct (`GTcls.Segmentation`, uint8 HxW) beside a cell of sparse
//! boundary matrices. Format reference: MathWorks, "MAT-File Format" (matfile_format.pdf,
//! Level 5): a 128-byte header, then data elements `[type u32][nbytes u32][data, padded
//! to 8]`, or the "small element" form `[nbytes u16][type u16][4 data bytes]`; type 15
//! (miCOMPRESSED) wraps zlib-compressed elements; type 14 (miMATRIX) holds array flags,
//! dimensions, name and class-specific sub-elements. Arrays are stored column-major.

use anyhow::{bail, Context, Result};
use std::io::Read;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_OBJECT: u8 = 3;
const MX_CHAR: u8 = 4;
const MX_SPARSE: u8 = 5;

/// A decoded MATLAB array (only what SBD needs is kept in detail).
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// Numeric or char array; values widened to f64, column-major as stored.
    Numeric {
        class: u8,
        dims: Vec<usize>,
        data: Vec<f64>,
    },
    Cell {
        dims: Vec<usize>,
        items: Vec<Array>,
    },
    /// `values[element * fields.len() + field]`.
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        values: Vec<Array>,
    },
    /// Sparse matrices are parsed past, not decoded.
    Sparse {
        dims: Vec<usize>,
    },
    /// An miMATRIX element with no content (MATLAB writes empty cells this way).
    Empty,
}

#[derive(Clone, Copy)]
struct Endian {
    little: bool,
}

impl Endian {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }
    fn u64(self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.little {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }
}

/// Cursor over a byte slice.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    e: Endian,
}

struct Element<'a> {
    kind: u32,
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .context("MAT-file ends inside a data element (truncated file)")?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn element(&mut self) -> Result<Element<'a>> {
        let tag = self.take(8)?;
        let first = self.e.u32(&tag[0..4]);
        // Small element: the upper 16 bits of the first word hold the byte count.
        let (small_n, small_t) = if self.e.little {
            (self.e.u16(&tag[2..4]), self.e.u16(&tag[0..2]))
        } else {
            (self.e.u16(&tag[0..2]), self.e.u16(&tag[2..4]))
        };
        if small_n != 0 {
            if small_n > 4 {
                bail!("corrupt MAT-file: small data element of {small_n} bytes");
            }
            return Ok(Element {
                kind: small_t as u32,
                data: &tag[4..4 + small_n as usize],
            });
        }
        let n = self.e.u32(&tag[4..8]) as usize;
        let data = self.take(n)?;
        if first != MI_COMPRESSED {
            let pad = (8 - n % 8) % 8;
            // The last element of a stream may omit its padding.
            let pad = pad.min(self.bytes.len() - self.pos);
            self.take(pad)?;
        }
        Ok(Element { kind: first, data })
    }
}

fn numbers(kind: u32, data: &[u8], e: Endian) -> Result<Vec<f64>> {
    let width = match kind {
        MI_INT8 | MI_UINT8 | MI_UTF8 => 1,
        MI_INT16 | MI_UINT16 | MI_UTF16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE | MI_UTF32 => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        other => bail!("MAT-file: data type {other} is not numeric"),
    };
    if !data.len().is_multiple_of(width) {
        bail!(
            "MAT-file: {} bytes is not a whole number of values",
            data.len()
        );
    }
    Ok(data
        .chunks_exact(width)
        .map(|c| match kind {
            MI_INT8 => c[0] as i8 as f64,
            MI_UINT8 | MI_UTF8 => c[0] as f64,
            MI_INT16 => e.u16(c) as i16 as f64,
            MI_UINT16 | MI_UTF16 => e.u16(c) as f64,
            MI_INT32 => e.u32(c) as i32 as f64,
            MI_UINT32 | MI_UTF32 => e.u32(c) as f64,
            MI_SINGLE => f32::from_bits(e.u32(c)) as f64,
            MI_DOUBLE => f64::from_bits(e.u64(c)),
            MI_INT64 => e.u64(c) as i64 as f64,
            _ => e.u64(c) as f64,
        })
        .collect())
}

fn dims_of(el: &Element, e: Endian) -> Result<Vec<usize>> {
    if el.kind != MI_INT32 {
        bail!("MAT-file: array dimensions are not int32");
    }
    numbers(el.kind, el.data, e)?
        .into_iter()
        .map(|d| {
            if d < 0.0 {
                bail!("MAT-file: negative dimension")
            } else {
                Ok(d as usize)
            }
        })
        .collect()
}

fn checked_count(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .context("MAT-file: array too large")
}

/// Parses the body of an miMATRIX element. Returns (name, array).
fn matrix(data: &[u8], e: Endian, depth: usize) -> Result<(String, Array)> {
    if depth > 32 {
        bail!("MAT-file: arrays nested too deeply");
    }
    if data.is_empty() {
        return Ok((String::new(), Array::Empty));
    }
    let mut c = Cursor {
        bytes: data,
        pos: 0,
        e,
    };
    let flags = c.element()?;
    if flags.kind != MI_UINT32 || flags.data.len() < 8 {
        bail!("MAT-file: array flags missing");
    }
    let class = (e.u32(&flags.data[0..4]) & 0xff) as u8;
    let dims = dims_of(&c.element()?, e)?;
    let name_el = c.element()?;
    let name = String::from_utf8_lossy(name_el.data).into_owned();
    let count = checked_count(&dims)?;
    let array = match class {
        MX_CELL => {
            let mut items = Vec::with_capacity(count.min(1 << 16));
            for _ in 0..count {
                let el = c.element()?;
                if el.kind != MI_MATRIX {
                    bail!("MAT-file: cell element is not an array");
                }
                items.push(matrix(el.data, e, depth + 1)?.1);
            }
            Array::Cell { dims, items }
        }
        MX_STRUCT => {
            let len_el = c.element()?;
            let field_len = numbers(len_el.kind, len_el.data, e)?
                .first()
                .copied()
                .context("MAT-file: struct field-name length missing")?
                as usize;
            let names_el = c.element()?;
            if field_len == 0 {
                bail!("MAT-file: struct field-name length 0");
            }
            let fields: Vec<String> = names_el
                .data
                .chunks(field_len)
                .map(|n| {
                    let end = n.iter().position(|&b| b == 0).unwrap_or(n.len());
                    String::from_utf8_lossy(&n[..end]).into_owned()
                })
                .filter(|n| !n.is_empty())
                .collect();
            let total = count
                .checked_mul(fields.len())
                .context("MAT-file: struct too large")?;
            let mut values = Vec::with_capacity(total.min(1 << 16));
            for _ in 0..total {
                let el = c.element()?;
                if el.kind != MI_MATRIX {
                    bail!("MAT-file: struct field is not an array");
                }
                values.push(matrix(el.data, e, depth + 1)?.1);
            }
            Array::Struct {
                dims,
                fields,
                values,
            }
        }
        MX_OBJECT => bail!("MAT-file: MATLAB objects are not supported"),
        MX_SPARSE => Array::Sparse { dims },
        MX_CHAR | 6..=15 => {
            let real = c.element()?;
            let data = numbers(real.kind, real.data, e)?;
            if data.len() != count {
                bail!(
                    "MAT-file: array {name:?} has {} values for dimensions {dims:?}",
                    data.len()
                );
            }
            Array::Numeric { class, dims, data }
        }
        other => bail!("MAT-file: unknown array class {other}"),
    };
    Ok((name, array))
}

/// Reads every top-level variable of a Level 5 MAT-file.
pub fn read_variables(bytes: &[u8]) -> Result<Vec<(String, Array)>> {
    if bytes.len() < 128 {
        bail!("not a MATLAB 5 MAT-file (shorter than its 128-byte header)");
    }
    let little = match &bytes[126..128] {
        b"IM" => true,
        b"MI" => false,
        _ => bail!(
            "not a MATLAB 5 MAT-file (no endian indicator; v7.3/HDF5 files are not supported)"
        ),
    };
    let e = Endian { little };
    let mut c = Cursor {
        bytes: &bytes[128..],
        pos: 0,
        e,
    };
    let mut out = Vec::new();
    while !c.at_end() {
        let el = c.element()?;
        match el.kind {
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(el.data)
                    .read_to_end(&mut inflated)
                    .context("MAT-file: corrupt compressed element")?;
                let mut inner = Cursor {
                    bytes: &inflated,
                    pos: 0,
                    e,
                };
                while !inner.at_end() {
                    let el = inner.element()?;
                    if el.kind == MI_MATRIX {
                        out.push(matrix(el.data, e, 0)?);
                    }
                }
            }
            MI_MATRIX => out.push(matrix(el.data, e, 0)?),
            _ => {}
        }
    }
    Ok(out)
}

/// A row-major 8-bit label image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// Extracts `GTcls.Segmentation` from an SBD `cls/<id>.mat` file, as row-major u8.
pub fn sbd_segmentation(bytes: &[u8]) -> Result<Labels> {
    let vars = read_variables(bytes)?;
    let (_, gt) = vars
        .into_iter()
        .find(|(n, _)| n == "GTcls")
        .context("no variable `GTcls` (is this an SBD cls/*.mat file?)")?;
    let Array::Struct { fields, values, .. } = gt else {
        bail!("`GTcls` is not a struct");
    };
    let idx = fields
        .iter()
        .position(|f| f == "Segmentation")
        .context("`GTcls` has no field `Segmentation`")?;
    let Some(Array::Numeric { dims, data, .. }) = values.get(idx) else {
        bail!("`GTcls.Segmentation` is not a numeric array");
    };
    if dims.len() != 2 {
        bail!("`GTcls.Segmentation` has dimensions {dims:?}, expected 2");
    }
    let (h, w) = (dims[0], dims[1]);
    let mut out = vec![0u8; h * w];
    for col in 0..w {
        for row in 0..h {
            let v = data[col * h + row];
            if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                bail!("`GTcls.Segmentation` holds {v}, not a class id 0..255");
            }
            out[row * w + col] = v as u8;
        }
    }
    Ok(Labels {
        width: u32::try_from(w).context("image too wide")?,
        height: u32::try_from(h).context("image too tall")?,
        data: out,
    })
}
