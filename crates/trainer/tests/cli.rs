//! The `trainer` binary end to end on the synthetic dataset, at a tiny size: outputs,
//! exact resume after `kill -9`, eval and predict on the checkpoint, the ablation table,
//! and the errors users get for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{fails, fails_with_env, ok, run_ok, trainer, BIN};

/// A run small enough for a test: ResNet-18 on 32-pixel crops, batch 2 + 2.
fn tiny_args(out: &Path, iters: usize) -> Vec<String> {
    let args = format!(
        "train --iters {iters} --eval-every 3 --log-every 1 --batch-size 2 --crop-size 32 --val-limit 4 \
         --num-queries 16 --num-negatives 32 --output-dim 16 --num-threads 2 --seed 3 --out {}",
        out.display()
    );
    args.split_whitespace().map(String::from).collect()
}

/// metrics.jsonl without the timing fields, which legitimately differ between runs.
fn metrics_without_timing(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v.as_object_mut().expect("an object").remove("images_per_s");
            v
        })
        .collect()
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_run_killed_at_any_moment_and_resumed_ends_bit_for_bit_as_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let iters = 7;
    let text = ok(trainer(&tiny_args(&a, iters)));
    assert!(text.contains("last evaluation (step 7)"), "{text}");
    assert!(text.contains("best evaluation (step"), "{text}");
    for f in [
        "config.json",
        "metrics.jsonl",
        "curves.png",
        "last.safetensors",
        "best.safetensors",
        "state.safetensors",
    ] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    let evals = metrics_without_timing(&a)
        .into_iter()
        .filter(|v| v["kind"] == "eval")
        .count();
    assert_eq!(evals, 3, "evaluations at steps 3, 6 and 7");

    // Run b: killed (SIGKILL) as soon as its first state file exists, and again a little
    // later, resumed each time.
    let mut child = Command::new(BIN)
        .args(tiny_args(&b, iters))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !b.join("state.safetensors").exists() && start.elapsed() < Duration::from_secs(300) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut resume = tiny_args(&b, iters);
    resume.push("--resume".into());
    let mut child = Command::new(BIN)
        .args(&resume)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    ok(trainer(&resume));

    assert_eq!(
        read(a.join("last.safetensors")),
        read(b.join("last.safetensors")),
        "teacher weights differ"
    );
    assert_eq!(
        read(a.join("best.safetensors")),
        read(b.join("best.safetensors"))
    );
    assert_eq!(
        metrics_without_timing(&a),
        metrics_without_timing(&b),
        "metrics differ"
    );

    // A finished run refuses to start over in the same folder.
    let again = fails(
        &tiny_args(&a, iters)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(again.contains("--resume"), "{again}");

    // eval on the last checkpoint gives the run's last evaluation exactly.
    let last_eval = metrics_without_timing(&a)
        .into_iter()
        .rev()
        .find(|v| v["kind"] == "eval")
        .unwrap();
    let ckpt = a.join("last.safetensors");
    let json = run_ok(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--val-limit",
        "4",
        "--json",
    ]);
    let line = json
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["dataset"], "synthetic");
    assert_eq!(v["miou"], last_eval["miou"], "{v}");
    assert_eq!(v["pixel_acc"], last_eval["pixel_acc"]);
    let table = run_ok(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--val-limit",
        "4",
    ]);
    assert!(
        table.contains("**mIoU**") && table.contains("striped disc"),
        "{table}"
    );

    // A checkpoint of another class count is refused with the reason.
    let wrong = fails(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--dataset",
        "pascal",
    ]);
    assert!(
        wrong.contains("7 classes") && wrong.contains("21"),
        "{wrong}"
    );

    // predict: a mask and an overlay of the image's own (odd, non-square) size, in the palette.
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    image::RgbImage::from_fn(45, 37, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
    })
    .save(photos.join("odd.png"))
    .unwrap();
    std::fs::write(photos.join("notes.txt"), "not an image").unwrap();
    let preds = tmp.path().join("preds");
    ok(Command::new(BIN)
        .args(["predict", "--checkpoint", ckpt.to_str().unwrap(), "--input"])
        .arg(&photos)
        .arg("--output")
        .arg(&preds)
        .output()
        .unwrap());
    let mask = image::open(preds.join("odd_mask.png")).unwrap().into_rgb8();
    assert_eq!(mask.dimensions(), (45, 37));
    let palette = reco_data::DatasetKind::Synthetic.palette();
    assert!(mask.pixels().all(|p| palette.contains(&p.0)));
    let overlay = image::open(preds.join("odd_overlay.png"))
        .unwrap()
        .into_rgb8();
    assert_eq!(overlay.dimensions(), (45, 37));

    // A corrupt image is named.
    std::fs::write(photos.join("broken.jpg"), b"\xff\xd8 not really").unwrap();
    let broken = fails(&[
        "predict",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--input",
        photos.join("broken.jpg").to_str().unwrap(),
        "--output",
        preds.to_str().unwrap(),
    ]);
    assert!(broken.contains("broken.jpg"), "{broken}");
}

/// A number from the clock, for the test's random step and signal (printed, so that a
/// failure can be rerun by hand).
fn clock_random() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(7)
}

/// Every tensor of a safetensors file, by name: dtype, shape and raw bytes (the
/// metadata, which names the run folder, left out).
fn tensor_bytes(path: &Path) -> std::collections::BTreeMap<String, String> {
    let bytes = read(path.to_path_buf());
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let digest = view.data().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
            (
                name,
                format!(
                    "{:?} {:?} {} {digest:x}",
                    view.dtype(),
                    view.shape(),
                    view.data().len()
                ),
            )
        })
        .collect()
}

/// `trainer args...`, sent SIG`signal` once it logs step `at`; its exit status and stderr.
fn signalled_run(args: &[String], at: usize, signal: &str) -> (std::process::ExitStatus, String) {
    use std::io::BufRead;
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut signalled = false;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if !signalled && line.starts_with(&format!("step {at}/")) {
            send_signal(child.id(), signal);
            signalled = true;
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    (child.wait().unwrap(), seen)
}

/// `kill -<signal> pid`.
fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// The scalars of every event file in `dir`, by (step, tag).
fn tensorboard_scalars(dir: &Path) -> std::collections::BTreeMap<(i64, String), f32> {
    use trainer::reports::tensorboard::{event, read_events, summary};
    let mut out = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with("events.out.tfevents.") {
            continue;
        }
        // read_events checks the framing and both CRCs of every record.
        for e in read_events(&path).unwrap() {
            if let Some(event::What::Summary(s)) = e.what {
                for v in s.value {
                    if let Some(summary::value::Value::SimpleValue(x)) = v.value {
                        out.insert((e.step, v.tag), x);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn a_signal_at_a_random_step_stops_cleanly_and_the_resumed_run_ends_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let iters = 8;
    let mut args_a = tiny_args(&a, iters);
    args_a.extend(["--save-every".into(), "2".into()]);
    ok(trainer(&args_a));

    // TensorBoard got exactly the scalars of metrics.jsonl.
    let scalars = tensorboard_scalars(&a);
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(a.join("config.json")).unwrap(),
    )
    .unwrap()["class_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    let text = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let mut expected = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_i64().unwrap();
        let mut pairs = vec![];
        if v["kind"] == "train" {
            for (key, tag) in [
                ("loss", "loss/total"),
                ("sup", "loss/sup"),
                ("unsup", "loss/unsup"),
                ("reco", "loss/reco"),
                ("lr", "train/lr"),
                ("strong_threshold", "train/strong_threshold"),
                ("images_per_s", "train/images_per_s"),
            ] {
                pairs.push((tag.to_string(), v[key].as_f64().unwrap()));
            }
        } else {
            pairs.push(("eval/miou".into(), v["miou"].as_f64().unwrap()));
            pairs.push(("eval/pixel_acc".into(), v["pixel_acc"].as_f64().unwrap()));
            for (i, iou) in v["per_class_iou"].as_array().unwrap().iter().enumerate() {
                if let Some(x) = iou.as_f64() {
                    pairs.push((format!("iou/{}", names[i].replace(' ', "_")), x));
                }
            }
        }
        for (tag, x) in pairs {
            let got = scalars.get(&(step, tag.clone()));
            assert_eq!(got, Some(&(x as f32)), "{tag} at step {step}");
            expected += 1;
        }
    }
    assert_eq!(scalars.len(), expected, "extra scalars in the event file");
    assert!(scalars.contains_key(&(8, "iou/background".to_string())));

    // Run b: stopped by a signal after a random step, resumed by the printed command.
    let r = clock_random();
    let at = 1 + (r % (iters as u64 - 2)) as usize;
    let signal = ["TERM", "INT", "USR1"][(r / 7 % 3) as usize];
    let code = match signal {
        "TERM" => 143,
        "INT" => 130,
        _ => 138,
    };
    eprintln!("SIG{signal} after step {at}");
    let mut args_b = tiny_args(&b, iters);
    args_b.extend(["--save-every".into(), "2".into()]);
    let (status, log) = signalled_run(&args_b, at, signal);
    assert_eq!(
        status.code(),
        Some(code),
        "exit status of SIG{signal}:\n{log}"
    );
    assert!(
        log.contains(&format!("SIG{signal} received: stopped after step")),
        "{log}"
    );
    assert!(b.join("state.safetensors").is_file() && b.join("last.safetensors").is_file());
    let resume = log
        .lines()
        .skip_while(|l| !l.starts_with("resume with:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no resume command:\n{log}"))
        .trim()
        .to_string();
    assert!(resume.ends_with("--resume"), "{resume}");
    let out = Command::new("sh").args(["-c", &resume]).output().unwrap();
    let resumed = ok(out);
    assert!(resumed.contains("resuming the run in"), "{resumed}");

    assert_eq!(
        read(a.join("last.safetensors")),
        read(b.join("last.safetensors")),
        "teacher weights differ after SIG{signal} at step {at}"
    );
    assert_eq!(
        tensor_bytes(&a.join("state.safetensors")),
        tensor_bytes(&b.join("state.safetensors")),
        "student, teacher or momentum differ after SIG{signal} at step {at}"
    );
    assert_eq!(metrics_without_timing(&a), metrics_without_timing(&b));

    // A signal during an evaluation (it starts right after step 3's log line): the
    // evaluation and its checkpoints finish, the run stops after step 3 and resumes.
    let c = tmp.path().join("c");
    let mut args_c = tiny_args(&c, iters);
    args_c.extend(["--save-every".into(), "2".into()]);
    let (status, log) = signalled_run(&args_c, 3, "TERM");
    assert_eq!(status.code(), Some(143), "{log}");
    assert!(
        log.contains("eval at step 3") && log.contains("stopped after step 3/"),
        "{log}"
    );
    let mut resume_c = args_c.clone();
    resume_c.push("--resume".into());
    ok(trainer(&resume_c));
    assert_eq!(
        read(a.join("last.safetensors")),
        read(c.join("last.safetensors")),
        "teacher weights differ after SIGTERM during the evaluation at step 3"
    );

    // --resume auto: continues a finished run's folder (nothing left to train) and
    // starts a new one in an empty folder.
    let mut again = args_b.clone();
    again.extend(["--resume".into(), "auto".into()]);
    let text = ok(trainer(&again));
    assert!(text.contains("last evaluation (step 8)"), "{text}");
    let fresh = tmp.path().join("fresh");
    let mut first = tiny_args(&fresh, 2);
    first.extend(["--resume".into(), "auto".into()]);
    let text = ok(trainer(&first));
    assert!(text.contains("starting from step 0"), "{text}");
}

#[test]
fn ablate_trains_the_three_variants_per_seed_on_one_split_and_writes_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ablate");
    let mut args = tiny_args(&out, 2);
    args[0] = "ablate".into();
    args.extend(["--seeds".to_string(), "2".to_string()]);
    let text = ok(trainer(&args));
    let table = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    assert!(table.contains("seeds 3..=4"), "{table}");
    for name in ["| supervised |", "| ClassMix |", "| ClassMix + ReCo |"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
        // Mean ± std over the two seeds, then each seed's last mIoU.
        assert!(row.contains(" ± "), "{row}");
        assert!(row.contains("3: ") && row.contains("4: "), "{row}");
        assert!(text.contains(name), "{text}");
    }
    let split = |seed: &str, dir: &str| {
        let path = out.join(seed).join(dir).join("config.json");
        let cfg: serde_json::Value = serde_json::from_slice(&read(path)).unwrap();
        cfg["split"].clone()
    };
    for seed in ["seed-3", "seed-4"] {
        assert_eq!(split(seed, "sup"), split(seed, "classmix"));
        assert_eq!(split(seed, "sup"), split(seed, "classmix_reco"));
    }
    let msg = fails(&["ablate", "--seeds", "0", "--out", out.to_str().unwrap()]);
    assert!(msg.contains("--seeds"), "{msg}");
}

#[test]
fn bad_input_ends_in_an_error_that_names_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = out.to_str().unwrap();
    let msg = fails(&["train", "--dataset", "imagenet", "--out", o]);
    assert!(msg.contains("imagenet"), "{msg}");
    let msg = fails(&["train", "--mix", "mixup", "--out", o]);
    assert!(msg.contains("mixup"), "{msg}");
    let msg = fails(&["train", "--output-stride", "12", "--out", o]);
    assert!(msg.contains("--output-stride"), "{msg}");
    let msg = fails(&["train", "--backbone", "resnet99", "--out", o]);
    assert!(msg.contains("resnet99"), "{msg}");
    let msg = fails(&["train", "--iters", "-3", "--out", o]);
    assert!(msg.contains("-3"), "{msg}");
    let msg = fails(&["train", "--device", "cuda", "--out", o]);
    assert!(msg.contains("--features cuda"), "{msg}");
    let msg = fails(&["train", "--device", "tpu", "--out", o]);
    assert!(msg.contains("tpu"), "{msg}");
    let missing = tmp.path().join("no-such-voc");
    let msg = fails(&[
        "train",
        "--dataset",
        "pascal",
        "--data-root",
        missing.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(
        msg.contains("no-such-voc") && msg.contains("cargo xtask fetch-data --dataset pascal"),
        "{msg}"
    );
    let msg = fails(&[
        "train",
        "--pretrained",
        "models/resnet18.safetensors",
        "--out",
        o,
    ]);
    assert!(
        msg.contains("cargo xtask fetch-weights --backbone resnet18"),
        "{msg}"
    );
    let msg = fails(&["train", "--save-every", "0", "--out", o]);
    assert!(msg.contains("--save-every must be at least 1"), "{msg}");
    // --resume needs a run to continue; --resume auto starts one (see the signal test).
    let msg = fails(&["train", "--resume", "--out", o]);
    assert!(
        msg.contains("holds no saved run") && msg.contains("--resume auto"),
        "{msg}"
    );
    let msg = fails(&["train", "--resume", "sometimes", "--out", o]);
    assert!(msg.contains("sometimes"), "{msg}");
    // A folder where no file can be created (as root, a read-only folder is writable;
    // /proc/self is not): the event file fails at the start, before any step.
    if Path::new("/proc/self").is_dir() {
        let msg = fails(&["train", "--out", "/proc/self"]);
        assert!(
            msg.contains("cannot create the TensorBoard event file") && !msg.contains("step 1/"),
            "{msg}"
        );
    }
    let config = tmp.path().join("config.json");
    std::fs::write(&config, r#"{"iters": 10, "learning_rate": 0.1}"#).unwrap();
    let msg = fails(&["train", "--config", config.to_str().unwrap(), "--out", o]);
    assert!(msg.contains("learning_rate"), "{msg}");
    let msg = fails(&[
        "eval",
        "--checkpoint",
        tmp.path().join("nothing.safetensors").to_str().unwrap(),
    ]);
    assert!(msg.contains("nothing.safetensors"), "{msg}");
    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"definitely not safetensors").unwrap();
    let msg = fails(&[
        "eval",
        "--checkpoint",
        garbage.to_str().unwrap(),
        "--dataset",
        "synthetic",
    ]);
    assert!(msg.contains("garbage.safetensors"), "{msg}");
}

#[test]
fn a_diverging_run_stops_with_an_error_naming_the_step() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nan");
    let mut args = tiny_args(&out, 12);
    args.extend(["--lr".to_string(), "1e30".to_string()]);
    let out_text = trainer(&args);
    let text = String::from_utf8_lossy(&out_text.stderr).to_string();
    assert!(!out_text.status.success(), "{text}");
    assert!(
        text.contains("the loss became") && text.contains("at step"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");
}

#[test]
fn check_runs_the_loss_fixtures_and_bench_prints_its_table() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../loss/tests/fixtures");
    let text = run_ok(&[
        "check",
        "--skip-models",
        "--seeds",
        "40",
        "--fixtures",
        fixtures,
    ]);
    assert!(
        text.contains("supervised CE loss") && text.contains("ReCo imbalanced"),
        "{text}"
    );
    assert!(text.contains("checks passed"), "{text}");
    let missing = fails(&["check", "--fixtures", "/nonexistent-fixtures"]);
    assert!(
        missing.contains("deeplabv3p_resnet50_os16.safetensors"),
        "{missing}"
    );

    let text = run_ok(&[
        "bench",
        "--backbone",
        "resnet18",
        "--batch",
        "2",
        "--crop",
        "64",
        "--runs",
        "1",
        "--only",
        "train",
    ]);
    assert!(text.contains("| train step"), "{text}");
    let bad = fails(&["bench", "--only", "inference"]);
    assert!(bad.contains("inference"), "{bad}");
}

/// The `miou` of the last evaluation line of a run's metrics.jsonl, and that of `trainer
/// eval --json` on its last checkpoint with `extra` flags.
fn run_and_eval_miou(run: &Path, extra: &[&str]) -> (f64, f64) {
    let last_eval = metrics_without_timing(run)
        .into_iter()
        .rev()
        .find(|v| v["kind"] == "eval")
        .expect("an eval line");
    let ckpt = run.join("last.safetensors");
    let json = ok(Command::new(BIN)
        .args(["eval", "--checkpoint", ckpt.to_str().unwrap()])
        .args(["--val-limit", "4", "--json"])
        .args(extra)
        .output()
        .unwrap());
    let line = json
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    (
        last_eval["miou"].as_f64().unwrap(),
        v["miou"].as_f64().unwrap(),
    )
}

/// Tensor names of a safetensors file, sorted (without `__metadata__`).
fn tensor_names(path: &Path) -> Vec<String> {
    let (shapes, _) = reco_models::meta::read_header(path).unwrap();
    let mut names: Vec<String> = shapes.into_keys().collect();
    names.sort();
    names
}

#[test]
fn checkpoints_describe_themselves_and_deeplabv2_trains_evaluates_and_predicts() {
    use reco_models::{read_meta, Backbone, DeepLabConfig, NetworkKind};
    let tmp = tempfile::tempdir().unwrap();
    let synthetic = reco_data::DatasetKind::Synthetic;
    let class_names: Vec<String> = synthetic
        .class_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    // The state_dict keys of the original for a network, from a freshly built model.
    let original_keys = |kind: NetworkKind, cfg: &DeepLabConfig| -> Vec<String> {
        let vars = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &vars,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        reco_models::Network::new(kind, cfg, vb).unwrap();
        reco_models::checkpoint::state_dict(&vars, 0)
            .unwrap()
            .into_keys()
            .collect()
    };

    for (kind, os) in [
        (NetworkKind::DeepLabV3Plus, 16),
        (NetworkKind::DeepLabV2, 8),
    ] {
        let run = tmp.path().join(kind.name());
        let mut args = tiny_args(&run, 2);
        args.extend(
            ["--network", kind.name(), "--output-stride", &os.to_string()].map(String::from),
        );
        ok(trainer(&args));
        let last = run.join("last.safetensors");
        let meta = read_meta(&last)
            .unwrap()
            .expect("metadata in last.safetensors");
        assert_eq!(meta.network, kind);
        assert_eq!(meta.backbone, Backbone::ResNet18);
        assert_eq!(meta.output_stride, os);
        assert_eq!((meta.num_classes, meta.output_dim), (7, 16));
        assert_eq!(meta.dataset.as_deref(), Some("synthetic"));
        assert_eq!(meta.class_names, class_names);
        assert_eq!(
            read_meta(&run.join("best.safetensors")).unwrap(),
            Some(meta.clone())
        );
        // Exactly the original's state_dict keys: metadata adds no tensor.
        assert_eq!(tensor_names(&last), original_keys(kind, &meta.config()));

        // eval (folded batch norm, the checkpoint copied out of its run folder so that
        // only the metadata describes it) gives the run's own last evaluation.
        let alone = tmp.path().join(format!("{}-alone", kind.name()));
        std::fs::create_dir_all(&alone).unwrap();
        std::fs::copy(&last, alone.join("last.safetensors")).unwrap();
        std::fs::copy(run.join("metrics.jsonl"), alone.join("metrics.jsonl")).unwrap();
        let (during, after) = run_and_eval_miou(&alone, &[]);
        assert!(
            (during - after).abs() < 1e-9,
            "{kind}: training {during}, eval {after}"
        );
        // Sliding window and test-time augmentation run through the same flags.
        let (_, tta) = run_and_eval_miou(
            &alone,
            &[
                "--tile",
                "32",
                "--tile-stride",
                "16",
                "--scales",
                "0.75,1",
                "--flip",
            ],
        );
        assert!((0.0..=1.0).contains(&tta), "{tta}");
        // At another output stride than the trained one: a note, not an error; the JSON
        // names both strides.
        let other = if os == 8 { "16" } else { "8" };
        let out = Command::new(BIN)
            .args(["eval", "--checkpoint"])
            .arg(alone.join("last.safetensors"))
            .args(["--val-limit", "2", "--json", "--output-stride", other])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "running at output stride {other}; it was trained at {os}"
            )),
            "{stderr}"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value =
            serde_json::from_str(stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
        assert_eq!(v["output_stride"].to_string(), other);
        assert_eq!(v["trained_output_stride"], os);

        let photos = tmp.path().join(format!("{}-photos", kind.name()));
        std::fs::create_dir_all(&photos).unwrap();
        image::RgbImage::from_fn(45, 37, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
        })
        .save(photos.join("odd.png"))
        .unwrap();
        let preds = tmp.path().join(format!("{}-preds", kind.name()));
        ok(Command::new(BIN)
            .args(["predict", "--checkpoint"])
            .arg(alone.join("last.safetensors"))
            .arg("--input")
            .arg(&photos)
            .arg("--output")
            .arg(&preds)
            .args(["--tile", "32", "--flip"])
            .output()
            .unwrap());
        let mask = image::open(preds.join("odd_mask.png")).unwrap().into_rgb8();
        assert_eq!(mask.dimensions(), (45, 37));
        assert!(mask.pixels().all(|p| synthetic.palette().contains(&p.0)));
    }
}

#[test]
fn bad_checkpoints_images_and_inference_flags_end_in_clear_errors() {
    use reco_models::{CheckpointMeta, DeepLabConfig, NetworkKind};
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let msg = fails(&["train", "--network", "unet", "--out", o.to_str().unwrap()]);
    assert!(msg.contains("unet") && msg.contains("deeplabv2"), "{msg}");

    // A ResNet-18 DeepLabV3+ of the synthetic dataset's 7 classes, saved with metadata
    // written by hand (safetensors does not check it; reco-models' writer would refuse).
    let cfg = DeepLabConfig {
        backbone: reco_models::Backbone::ResNet18,
        num_classes: 7,
        output_dim: 16,
        ..DeepLabConfig::default()
    };
    let vars = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(
        &vars,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    reco_models::Network::new(NetworkKind::DeepLabV3Plus, &cfg, vb).unwrap();
    let tensors = reco_models::checkpoint::state_dict(&vars, 0).unwrap();
    let write = |name: &str, metadata: std::collections::HashMap<String, String>| -> PathBuf {
        let path = tmp.path().join(name);
        let bytes = safetensors::tensor::serialize(tensors.iter(), Some(metadata)).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let good = CheckpointMeta::new(NetworkKind::DeepLabV3Plus, &cfg);
    let ckpt = write("good.safetensors", good.to_metadata().unwrap());
    let lying = CheckpointMeta {
        num_classes: 21,
        ..good.clone()
    };
    let lying = write("lying.safetensors", lying.to_metadata().unwrap());
    let mut unknown = good.to_metadata().unwrap();
    let json = unknown["reco"].replace("deeplabv3p", "unet");
    unknown.insert("reco".into(), json);
    let unknown = write("unknown.safetensors", unknown);

    let eval = |ckpt: &Path, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--dataset",
            "synthetic",
        ];
        args.extend(extra);
        fails(&args)
    };
    let msg = eval(&lying, &[]);
    assert!(
        msg.contains("lying.safetensors") && msg.contains("num_classes") && msg.contains("21"),
        "{msg}"
    );
    let msg = eval(&unknown, &[]);
    assert!(
        msg.contains("unknown.safetensors") && msg.contains("unet"),
        "{msg}"
    );
    let msg = eval(&ckpt, &["--output-stride", "12"]);
    assert!(
        msg.contains("output stride 12 is not one of 8, 16 or 32"),
        "{msg}"
    );
    let msg = eval(&ckpt, &["--tile", "16"]);
    assert!(msg.contains("--tile 16") && msg.contains("32"), "{msg}");
    let msg = eval(&ckpt, &["--tile-stride", "16"]);
    assert!(msg.contains("--tile-stride needs --tile"), "{msg}");
    let msg = eval(&ckpt, &["--scales", "1,-0.5"]);
    assert!(msg.contains("--scales"), "{msg}");

    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    image::RgbImage::from_fn(20, 40, |_, _| image::Rgb([10, 20, 30]))
        .save(photos.join("tiny.png"))
        .unwrap();
    let predict = |extra: &[&str]| {
        let mut args = vec![
            "predict",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--input",
            photos.to_str().unwrap(),
            "--output",
            o.to_str().unwrap(),
        ];
        args.extend(extra);
        fails(&args)
    };
    let msg = predict(&[]);
    assert!(
        msg.contains("tiny.png") && msg.contains("20x40") && msg.contains("32"),
        "{msg}"
    );
    let msg = predict(&["--tile", "8"]);
    assert!(msg.contains("--tile 8") && msg.contains("32"), "{msg}");
    let msg = predict(&["--max-size", "10"]);
    assert!(msg.contains("--max-size 10"), "{msg}");
}

#[test]
fn distributed_flags_that_cannot_work_end_in_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let o = tmp.path().join("run");
    let o = o.to_str().unwrap();
    let msg = fails(&["train", "--sync-bn", "--out", o]);
    assert!(msg.contains("--sync-bn needs a process group"), "{msg}");
    let msg = fails(&["train", "--dist-backend", "gloo", "--out", o]);
    assert!(
        msg.contains("gloo") && msg.contains("single, mpi or nccl"),
        "{msg}"
    );
    // The default build has neither backend (the `mpi` test build has MPI).
    if !cfg!(feature = "nccl") {
        let msg = fails(&["train", "--dist-backend", "nccl", "--out", o]);
        assert!(msg.contains("--features nccl"), "{msg}");
    }
    // A torchrun-style launch of two ranks told to run alone.
    let torchrun = [("RANK", "1"), ("WORLD_SIZE", "2")];
    let msg = fails_with_env(
        &["train", "--dist-backend", "single", "--out", o],
        &torchrun,
    );
    assert!(msg.contains("launched as 2 ranks"), "{msg}");
    // The same launch without the flag: mpi on the CPU, which torchrun cannot start.
    let msg = fails_with_env(&["train", "--out", o], &torchrun);
    assert!(
        msg.contains("--features mpi") || msg.contains("mpirun"),
        "{msg}"
    );
    let msg = fails_with_env(
        &["train", "--out", o],
        &[("RANK", "2"), ("WORLD_SIZE", "2")],
    );
    assert!(msg.contains("not below the world size 2"), "{msg}");
    assert!(
        !tmp.path().join("run").exists(),
        "a run that could not start wrote its folder"
    );
}

/// DPT on a DINOv2-S from random weights, at a test's size: UniMatch V2's recipe reaches
/// config.json, the checkpoint describes itself and has UniMatch V2's names plus ReCo's
/// head, a run stopped by a signal resumes bit for bit (AdamW's moments in the state),
/// and eval, predict (whole, tiled, `--explain`) work on the checkpoint.
#[test]
fn dpt_on_dinov2_trains_resumes_bit_for_bit_evaluates_and_predicts() {
    use reco_models::{read_meta, Backbone, NetworkKind};
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let iters = 4;
    // `flag value` in `v`, replacing the flag's value when it is there already.
    fn set(v: &mut Vec<String>, flag: &str, value: &str) {
        match v.iter().position(|a| a == flag) {
            Some(i) => v[i + 1] = value.to_string(),
            None => v.extend([flag.to_string(), value.to_string()]),
        }
    }
    let args = |out: &Path| -> Vec<String> {
        let mut v = tiny_args(out, iters);
        // Crops of 3x3 patches; the state is written every 2 steps.
        for (flag, value) in [
            ("--network", "dpt"),
            ("--crop-size", "42"),
            ("--save-every", "2"),
        ] {
            set(&mut v, flag, value);
        }
        v
    };
    ok(trainer(&args(&a)));
    let config: serde_json::Value = serde_json::from_slice(&read(a.join("config.json"))).unwrap();
    let config = &config["config"];
    assert_eq!(config["backbone"], "dinov2-s");
    assert_eq!(config["optimizer"], "adamw");
    assert_eq!(config["output_stride"], 14);
    assert_eq!(config["lr_floor"], 0.0);
    let last = a.join("last.safetensors");
    let meta = read_meta(&last).unwrap().expect("metadata");
    assert_eq!(
        (meta.network, meta.backbone, meta.output_stride),
        (NetworkKind::Dpt, Backbone::Dinov2Small, 14)
    );
    let names = tensor_names(&last);
    for name in [
        "backbone.blocks.11.attn.qkv.weight",
        "backbone.pos_embed",
        "backbone.mask_token",
        "head.resize_layers.0.weight",
        "head.scratch.refinenet4.resConfUnit1.conv1.weight",
        "head.scratch.output_conv.2.weight",
        "representation.2.weight",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing");
    }
    let state = tensor_bytes(&a.join("state.safetensors"));
    assert!(state.keys().any(|k| k.starts_with("adamw.exp_avg_sq/")));

    // Stopped by a signal after step 1 (the state written on the signal), resumed: bit
    // for bit.
    let (status, log) = signalled_run(&args(&b), 1, "TERM");
    assert_eq!(status.code(), Some(143), "{log}");
    let mut resume = args(&b);
    resume.push("--resume".into());
    ok(trainer(&resume));
    assert_eq!(
        read(a.join("last.safetensors")),
        read(b.join("last.safetensors"))
    );
    assert_eq!(
        tensor_bytes(&a.join("state.safetensors")),
        tensor_bytes(&b.join("state.safetensors"))
    );

    // eval on the checkpoint gives the run's last evaluation (validation images of any
    // size are fitted to patch multiples the same way in both).
    let (during, after) = run_and_eval_miou(&a, &[]);
    assert!(
        (during - after).abs() < 1e-9,
        "training {during}, eval {after}"
    );
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    image::RgbImage::from_fn(45, 37, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 90])
    })
    .save(photos.join("odd.png"))
    .unwrap();
    for extra in [&[][..], &["--tile", "32", "--flip"][..], &["--explain"][..]] {
        let preds = tmp.path().join(format!("preds{}", extra.len()));
        ok(Command::new(BIN)
            .args(["predict", "--checkpoint"])
            .arg(&last)
            .arg("--input")
            .arg(&photos)
            .arg("--output")
            .arg(&preds)
            .args(extra)
            .output()
            .unwrap());
        let mask = image::open(preds.join("odd_mask.png")).unwrap().into_rgb8();
        assert_eq!(mask.dimensions(), (45, 37), "{extra:?}");
    }

    // A crop off the patch grid, or a ResNet under DPT, is refused with the fix.
    let mut bad = args(&tmp.path().join("bad"));
    set(&mut bad, "--crop-size", "40");
    let e = fails(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        e.contains("multiple of 14") && e.contains("use 28 or 42"),
        "{e}"
    );
    let mut bad = args(&tmp.path().join("bad2"));
    set(&mut bad, "--backbone", "resnet18");
    let e = fails(&bad.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("dpt takes dinov2-s"), "{e}");
}
