//! TensorBoard event files: `events.out.tfevents.<seconds>.<host>` in a run folder,
//! with scalars and PNG images, readable by `tensorboard --logdir runs`.
//!
//! Written directly rather than through a crate: the format is small and stable (a
//! TFRecord stream of `tensorflow.Event` protocol buffers), the maintained Rust writers
//! pull in a protobuf compiler at build time or TensorFlow itself, and we need only two
//! kinds of summary. The messages are declared here with `prost`'s derive (field numbers
//! from tensorflow/core/util/event.proto and core/framework/summary.proto), so no
//! `protoc` runs at build time; CRC-32C comes from `crc-fast`.
//!
//! Framing of each record (TFRecord): `u64 length (LE)`, `u32 masked_crc32c(length
//! bytes)`, `data`, `u32 masked_crc32c(data)`, where `masked(c) = ((c >> 15) | (c << 17))
//! + 0xa282ead8`. The first event of a file carries `file_version = "brain.Event:2"`.
//!
//! Events are appended and flushed after each call, so a killed run leaves a file that
//! TensorBoard reads up to the last whole record (readers stop at a torn tail).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use prost::Message;

/// `tensorflow.Event` (the fields we write).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(oneof = "event::What", tags = "3, 5, 7")]
    pub what: Option<event::What>,
}

/// `tensorflow.SessionLog`: a `START` at step `s` tells TensorBoard to drop the events
/// of earlier files at steps `>= s` (those a resumed run writes again).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionLog {
    /// 1 = START.
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// `SessionLog.status` START.
pub const SESSION_START: i32 = 1;

pub mod event {
    /// `Event.what`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        #[prost(string, tag = "3")]
        FileVersion(String),
        #[prost(message, tag = "5")]
        Summary(super::Summary),
        #[prost(message, tag = "7")]
        SessionLog(super::SessionLog),
    }
}

/// `tensorflow.Summary`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

pub mod summary {
    /// `Summary.Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(string, tag = "1")]
        pub tag: String,
        #[prost(oneof = "value::Value", tags = "2, 4")]
        pub value: Option<value::Value>,
    }

    pub mod value {
        /// `Summary.Value.value`.
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            #[prost(message, tag = "4")]
            Image(super::Image),
        }
    }

    /// `Summary.Image`: an encoded PNG with its size.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        #[prost(int32, tag = "1")]
        pub height: i32,
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA.
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }
}

/// The masked CRC-32C of TFRecord framing.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32;
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// One framed record.
fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Splits a TFRecord stream into its records, checking both CRCs of each. A torn last
/// record (a run killed mid-write) ends the list without an error, as TensorBoard reads it.
pub fn read_records(bytes: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while bytes.len() - at >= 12 {
        let len_bytes = &bytes[at..at + 8];
        let len = u64::from_le_bytes(len_bytes.try_into()?) as usize;
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into()?);
        anyhow::ensure!(
            crc == masked_crc32c(len_bytes),
            "record at byte {at}: length CRC mismatch"
        );
        let start = at + 12;
        let Some(end) = start.checked_add(len).filter(|&e| e + 4 <= bytes.len()) else {
            break; // torn tail
        };
        let data = &bytes[start..end];
        let crc = u32::from_le_bytes(bytes[end..end + 4].try_into()?);
        anyhow::ensure!(
            crc == masked_crc32c(data),
            "record at byte {at}: data CRC mismatch"
        );
        out.push(data.to_vec());
        at = end + 4;
    }
    Ok(out)
}

/// Reads every event of an event file (for tests and for tools that check a run).
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    read_records(&bytes)
        .with_context(|| format!("{} is not a TFRecord stream", path.display()))?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            Event::decode(r.as_slice())
                .with_context(|| format!("{}: record {i} is not an Event", path.display()))
        })
        .collect()
}

/// Appends events to one `events.out.tfevents.*` file.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<unix seconds>.<host>` (the name TensorBoard
    /// lists) and writes the version record. Fails at once when `dir` is not writable,
    /// so that a run does not find out after its first evaluation.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the run folder {}", dir.display()))?;
        let secs = wall_time() as u64;
        let host = hostname();
        let mut name = format!("events.out.tfevents.{secs}.{host}");
        // Two writers started within one second (a resumed run, a test) get two files.
        let mut k = 1;
        while dir.join(&name).exists() {
            name = format!("events.out.tfevents.{secs}.{host}.{k}");
            k += 1;
        }
        let path = dir.join(name);
        let file = File::create(&path).with_context(|| {
            format!(
                "cannot create the TensorBoard event file {} (is the folder writable? \
                 choose another --out)",
                path.display()
            )
        })?;
        let mut w = EventWriter {
            out: BufWriter::new(file),
            path,
        };
        w.write(Event {
            wall_time: wall_time(),
            step: 0,
            what: Some(event::What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(w)
    }

    /// Marks a restart at `step`: TensorBoard then shows, from the files written before,
    /// only the events below `step` (a resumed run writes the later ones again).
    pub fn restart_at(&mut self, step: u64) -> anyhow::Result<()> {
        self.write(Event {
            wall_time: wall_time(),
            step: step as i64,
            what: Some(event::What::SessionLog(SessionLog {
                status: SESSION_START,
            })),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars at one step (one event holding every value).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> anyhow::Result<()> {
        let value = values
            .iter()
            .map(|&(tag, v)| summary::Value {
                tag: tag.to_string(),
                value: Some(summary::value::Value::SimpleValue(v as f32)),
            })
            .collect();
        self.summary(step, value)
    }

    /// A PNG-encoded image (`channels`: 1, 2, 3 or 4).
    pub fn png(
        &mut self,
        step: u64,
        tag: &str,
        png: Vec<u8>,
        (width, height, channels): (u32, u32, u32),
    ) -> anyhow::Result<()> {
        let image = summary::Image {
            height: height as i32,
            width: width as i32,
            colorspace: channels as i32,
            encoded_image_string: png,
        };
        let value = vec![summary::Value {
            tag: tag.to_string(),
            value: Some(summary::value::Value::Image(image)),
        }];
        self.summary(step, value)
    }

    /// An RGB image, encoded as PNG here.
    pub fn rgb_image(&mut self, step: u64, tag: &str, img: &image::RgbImage) -> anyhow::Result<()> {
        let png = crate::image_io::encode_png(img, &self.path)
            .with_context(|| format!("TensorBoard image {tag}"))?;
        self.png(step, tag, png, (img.width(), img.height(), 3))
    }

    fn summary(&mut self, step: u64, value: Vec<summary::Value>) -> anyhow::Result<()> {
        self.write(Event {
            wall_time: wall_time(),
            step: step as i64,
            what: Some(event::What::Summary(Summary { value })),
        })
    }

    fn write(&mut self, event: Event) -> anyhow::Result<()> {
        let data = event.encode_to_vec();
        self.out
            .write_all(&frame(&data))
            .and_then(|_| self.out.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The host name as TensorBoard's writers put it in the file name (`localhost` when the
/// kernel does not say); characters outside `[A-Za-z0-9._-]` become `_`.
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let clean: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "localhost".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_tensorflow() {
        // CRC-32C("123456789") = 0xe3069283 (the check value of CRC-32/ISCSI);
        // masked as TensorFlow's crc32c::Mask.
        let crc: u32 = 0xe306_9283;
        let want = crc.rotate_right(15).wrapping_add(0xa282_ead8);
        assert_eq!(masked_crc32c(b"123456789"), want);
    }

    #[test]
    fn scalars_and_images_round_trip_through_the_framing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(10, &[("loss/sup", 1.25), ("lr", 0.0025)])
            .unwrap();
        let img = image::RgbImage::from_pixel(4, 3, image::Rgb([10, 20, 30]));
        w.rgb_image(20, "relation", &img).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].what,
            Some(event::What::FileVersion("brain.Event:2".into()))
        );
        let Some(event::What::Summary(s)) = &events[1].what else {
            panic!("no summary: {:?}", events[1]);
        };
        assert_eq!(events[1].step, 10);
        assert_eq!(s.value[0].tag, "loss/sup");
        assert_eq!(
            s.value[1].value,
            Some(summary::value::Value::SimpleValue(0.0025))
        );
        let Some(event::What::Summary(s)) = &events[2].what else {
            panic!("no summary: {:?}", events[2]);
        };
        let Some(summary::value::Value::Image(im)) = &s.value[0].value else {
            panic!("no image");
        };
        assert_eq!((im.width, im.height, im.colorspace), (4, 3, 3));
        let back = image::load_from_memory(&im.encoded_image_string)
            .unwrap()
            .to_rgb8();
        assert_eq!(back, img);
    }

    #[test]
    fn a_torn_tail_ends_the_stream_and_a_flipped_bit_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(1, &[("a", 1.0)]).unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(read_records(&bytes[..bytes.len() - 3]).unwrap().len(), 1);
        let mut bad = bytes.clone();
        let last = bad.len() - 6;
        bad[last] ^= 1;
        let err = read_records(&bad).unwrap_err().to_string();
        assert!(err.contains("data CRC mismatch"), "{err}");
    }

    #[test]
    fn an_unwritable_folder_fails_at_create() {
        // Root writes into read-only folders, so the portable unwritable case is a
        // "folder" that is a file.
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let err = format!("{:#}", EventWriter::create(&not_a_dir).err().unwrap());
        assert!(err.contains("run folder"), "{err}");
    }
}
