//! Cityscapes (fine annotations), as the official trees:
//!
//! ```text
//! <root>/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
//! <root>/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_*.png|json
//! ```
//!
//! The site needs an account: the login follows the official downloader
//! (cityscapesScripts `download/downloader.py`): GET the login page (session cookie), POST
//! `username`, `password`, `submit=Login` without following redirects, success = HTTP 302;
//! then the packages come from `file-handling/?packageID=N`, again without redirects (a
//! redirect there means "not logged in").

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::download::{read_text, Downloader};
use crate::extract::extract_once;
use crate::fetch::obtain;
use crate::prepare::{move_into, report, DatasetOptions};
use crate::sources::{
    Archive, CITYSCAPES_GTFINE, CITYSCAPES_LEFTIMG8BIT, CITYSCAPES_LOGIN_URL,
    CITYSCAPES_TRAIN_COUNT, CITYSCAPES_VAL_COUNT,
};

#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Logs `downloader`'s agent in; its cookie jar then carries the session.
pub fn login(downloader: &Downloader, login_url: &str, creds: &Credentials) -> Result<()> {
    let (Some(user), Some(pass)) = (&creds.username, &creds.password) else {
        bail!(
            "Cityscapes needs an account (https://www.cityscapes-dataset.com/register/): set \
             CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD, or pass --username and --password; \
             or download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip yourself \
             and pass --from DIR"
        );
    };
    let agent = downloader.agent();
    // The first GET sets the session cookie the form post must carry.
    agent
        .get(login_url)
        .call()
        .with_context(|| format!("cannot reach {login_url}"))?;
    let mut response = agent
        .post(login_url)
        .send_form([
            ("username", user.as_str()),
            ("password", pass.as_str()),
            ("submit", "Login"),
        ])
        .with_context(|| format!("cannot reach {login_url}"))?;
    let status = response.status().as_u16();
    if status != 302 {
        let body = read_text(&mut response.body_mut().as_reader(), 4096);
        let hint = if body.to_ascii_lowercase().contains("password") {
            " (the page still shows the login form)"
        } else {
            ""
        };
        bail!(
            "Cityscapes login failed: HTTP {status} instead of a redirect{hint}. Check the \
             username and password (CITYSCAPES_USERNAME / CITYSCAPES_PASSWORD or the flags)"
        );
    }
    Ok(())
}

fn keep_prefix(prefix: &'static str) -> impl Fn(&Path) -> bool {
    move |rel: &Path| rel.starts_with(prefix)
}

/// Counts images of one split and checks each has its `labelIds` file.
fn check_split(root: &Path, split: &str) -> Result<usize> {
    let images = root.join("leftImg8bit").join(split);
    let labels = root.join("gtFine").join(split);
    let mut count = 0;
    let mut cities: Vec<_> = std::fs::read_dir(&images)
        .with_context(|| format!("{} is missing after extraction", images.display()))?
        .collect::<std::io::Result<Vec<_>>>()?;
    cities.sort_by_key(|e| e.file_name());
    for city in cities {
        if !city.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(city.path())? {
            let file = file?;
            let name = file.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix("_leftImg8bit.png") else {
                continue;
            };
            let label = labels
                .join(city.file_name())
                .join(format!("{stem}_gtFine_labelIds.png"));
            if !label.is_file() {
                bail!(
                    "{} has no label {}: the two packages do not match",
                    file.path().display(),
                    label.display()
                );
            }
            count += 1;
        }
    }
    Ok(count)
}

pub fn fetch(opts: &DatasetOptions, creds: &Credentials) -> Result<()> {
    fetch_with_login_url(opts, creds, CITYSCAPES_LOGIN_URL)
}

/// `fetch` with the login page as a parameter (tests serve their own).
pub fn fetch_with_login_url(
    opts: &DatasetOptions,
    creds: &Credentials,
    login_url: &str,
) -> Result<()> {
    if !opts.begin()? {
        return Ok(());
    }
    let downloads = opts.downloads();
    let archives: [&Archive; 2] = [&CITYSCAPES_GTFINE, &CITYSCAPES_LEFTIMG8BIT];
    let official = archives
        .iter()
        .any(|a| opts.sources.needs_official_download(a, &downloads));
    // The official site answers "not logged in" with a redirect: don't follow redirects there.
    let downloader = Downloader::new(!official).with_retry(opts.sources.retry);
    if official {
        login(&downloader, login_url, creds)?;
    }
    let gt_zip = obtain(&CITYSCAPES_GTFINE, &opts.sources, &downloads, &downloader)?;
    let img_zip = obtain(
        &CITYSCAPES_LEFTIMG8BIT,
        &opts.sources,
        &downloads,
        &downloader,
    )?;

    let staging = opts.staging();
    let gt = extract_once(&gt_zip, &staging, &keep_prefix("gtFine"))?;
    let img = extract_once(&img_zip, &staging, &keep_prefix("leftImg8bit"))?;
    move_into(&gt.join("gtFine"), &opts.root.join("gtFine"))?;
    move_into(&img.join("leftImg8bit"), &opts.root.join("leftImg8bit"))?;

    let train = check_split(&opts.root, "train")?;
    let val = check_split(&opts.root, "val")?;
    opts.check_count("Cityscapes train images", train, CITYSCAPES_TRAIN_COUNT)?;
    opts.check_count("Cityscapes val images", val, CITYSCAPES_VAL_COUNT)?;
    opts.mark_ready(&format!(
        "cityscapes: {train} train, {val} val images\nsources: {} ({:?}), {} ({:?})\n",
        CITYSCAPES_GTFINE.file_name,
        CITYSCAPES_GTFINE.pin,
        CITYSCAPES_LEFTIMG8BIT.file_name,
        CITYSCAPES_LEFTIMG8BIT.pin
    ))?;
    report(opts, "cityscapes");
    println!("train: {train} images, val: {val} images");
    Ok(())
}
