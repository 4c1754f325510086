//! Test helpers: a loopback HTTP/1.1 server (GET with Range, HEAD, POST) and builders for
//! small archives in the real formats.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the server answers one path.
#[derive(Clone, Default)]
pub struct Route {
    pub body: Vec<u8>,
    /// Extra response headers (hub-like endpoints need ETag, X-Repo-Commit).
    pub headers: Vec<(String, String)>,
    /// For the next N GETs: announce the full length but send only half (of what was
    /// asked for), then hang up.
    pub cut_next: usize,
    /// Answer every GET with 200 and the whole body, as servers without Range support do.
    pub ignore_range: bool,
    /// Answer only when the request carries this cookie (`name=value`); else 302 to /login.
    pub needs_cookie: Option<String>,
    /// Status for POST (login form): 302 + Set-Cookie when the body contains this text.
    pub login_accepts: Option<(String, String)>,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
}

pub struct Server {
    pub base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (r, l) = (routes.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &r, &l);
                });
            }
        });
        Server { base, routes, log }
    }

    pub fn route(&self, path: &str, route: Route) {
        self.routes.lock().unwrap().insert(path.to_string(), route);
    }

    pub fn serve(&self, path: &str, body: Vec<u8>) {
        self.route(
            path,
            Route {
                body,
                ..Default::default()
            },
        );
    }

    pub fn log(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

fn handle(
    stream: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    }
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
    });
    let mut out = stream;
    let route = {
        let mut routes = routes.lock().unwrap();
        match routes.get_mut(&path) {
            None => None,
            Some(r) => {
                let snapshot = r.clone();
                if method == "GET" && r.cut_next > 0 {
                    r.cut_next -= 1;
                }
                Some(snapshot)
            }
        }
    };
    let Some(route) = route else {
        return write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    if method == "POST" {
        if let Some((needle, cookie)) = &route.login_accepts {
            let text = String::from_utf8_lossy(&body);
            if text.contains(needle.as_str()) {
                return write!(
                    out,
                    "HTTP/1.1 302 Found\r\nLocation: /\r\nSet-Cookie: {cookie}; Path=/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        }
        return write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\npassword"
        );
    }
    if let Some(cookie) = &route.needs_cookie {
        let ok = headers
            .get("cookie")
            .is_some_and(|c| c.split(';').any(|p| p.trim() == cookie));
        if !ok {
            return write!(
                out,
                "HTTP/1.1 302 Found\r\nLocation: /login/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    }
    let total = route.body.len();
    let start = headers
        .get("range")
        .filter(|_| !route.ignore_range)
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok());
    let mut head = String::new();
    let slice: &[u8] = match start {
        Some(s) if s >= total => {
            return write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
        Some(s) => {
            head.push_str("HTTP/1.1 206 Partial Content\r\n");
            head.push_str(&format!(
                "Content-Range: bytes {s}-{}/{total}\r\n",
                total - 1
            ));
            &route.body[s..]
        }
        None => {
            head.push_str("HTTP/1.1 200 OK\r\n");
            &route.body[..]
        }
    };
    head.push_str(&format!("Content-Length: {}\r\n", slice.len()));
    head.push_str("Accept-Ranges: bytes\r\nConnection: close\r\n");
    for (k, v) in &route.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    if method == "GET" && route.cut_next > 0 {
        out.write_all(&slice[..slice.len() / 2])?;
        out.flush()?;
        return Ok(()); // dropping the stream hangs up mid-body
    }
    out.write_all(slice)
}

/// A file of `tests/fixtures` (see its README.md).
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Archive builders
// ---------------------------------------------------------------------------------------

pub fn tar_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        let raw = name.as_bytes();
        assert!(raw.len() < 100);
        // Raw name (set_path would refuse `..`, which one test needs).
        h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn tgz_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes(entries)).unwrap();
    gz.finish().unwrap()
}

pub fn zip_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub fn jpeg(w: u32, h: u32, seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([seed.wrapping_mul(37), (x * 20) as u8, (y * 30) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// A PNG with the given colour type (palette: VOC-like, index = class id).
pub fn png_bytes(w: u32, h: u32, data: &[u8], palette: bool) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_depth(png::BitDepth::Eight);
        if palette {
            enc.set_color(png::ColorType::Indexed);
            let mut pal = vec![0u8; 256 * 3];
            for i in 0..256 {
                pal[i * 3] = (i * 7) as u8;
                pal[i * 3 + 1] = (i * 13) as u8;
                pal[i * 3 + 2] = (i * 29) as u8;
            }
            enc.set_palette(pal);
        } else {
            enc.set_color(png::ColorType::Grayscale);
        }
        let mut w = enc.write_header().unwrap();
        w.write_image_data(data).unwrap();
    }
    out
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    xtask::checksum::hex(&md5::Md5::digest(data))
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    xtask::checksum::hex(&sha2::Sha256::digest(data))
}

/// Runs the xtask binary; returns (success, stdout + stderr).
pub fn xtask(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run xtask");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Opens a prepared folder with the data crate and decodes every id of both subsets:
/// the contract of layouts.md, checked by its reader. Returns (train, val) id lists.
pub fn read_with_data_crate(
    kind: reco_data::DatasetKind,
    root: &std::path::Path,
) -> (Vec<String>, Vec<String>) {
    use reco_data::Subset;
    let ds = reco_data::open(kind, Some(root))
        .unwrap_or_else(|e| panic!("reco-data cannot open {}: {e}", root.display()));
    for subset in [Subset::Train, Subset::Val] {
        for id in ds.ids(subset) {
            let s = ds
                .load(id)
                .unwrap_or_else(|e| panic!("reco-data cannot load {id}: {e}"));
            assert_eq!(s.image.dimensions(), s.label.dimensions(), "{id}");
            let classes = ds.num_classes() as u8;
            assert!(
                s.label
                    .pixels()
                    .all(|p| p.0[0] < classes || p.0[0] == reco_data::IGNORE),
                "{id}"
            );
        }
    }
    (ds.ids(Subset::Train).to_vec(), ds.ids(Subset::Val).to_vec())
}
