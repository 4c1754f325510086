//! Two-rank tests of data-parallel training over MPI (cargo feature `mpi`, run by
//! .ci/run): `cargo test -p trainer --features mpi --test mpi`.
//!
//! Without a launcher this binary is the driver: for each scenario it starts
//! `mpirun -np 2` on itself (`$MPIRUN`, default `mpirun`) and checks the outcome within a
//! timeout. Started by mpirun, it is one rank of the named scenario:
//! - `collectives`: bucketed all-reduce, average, broadcast, barrier and synchronized
//!   batch norm (equal to plain batch norm over both ranks' images) are correct;
//! - `sync_bn_steps`: 3 SGD steps of a ResNet-18 DeepLabV3+ in f64 with synchronized
//!   batch norm, 2 ranks x 2 images, equal 1 rank x 4 images (losses, averaged
//!   gradients, weights and running statistics to 1e-10);
//! - `train_loop`: 3 steps of the real training loop (semi-supervised, ReCo, synthetic
//!   data) leave identical weights on both ranks, each having drawn its own batches;
//!   rank 0 alone writes the run folder. The driver then checks that one process
//!   cannot resume that 2-rank state;
//! - `error`, `panic`, `kill`: rank 1 fails (returns an error / panics / is killed)
//!   while rank 0 waits in an all-reduce; the job must end with an error, not hang.
//!
//! And `mpirun -np 2 trainer train --sync-bn ...`: the binary, its flags and its launch
//! detection, end to end; `trainer_signal`: SIGUSR1 sent to rank 1 alone at a random
//! step stops both ranks after the same step, and the resumed 2-rank run ends with the
//! weights of an uninterrupted one, bit for bit; `srun`: on a single-node SLURM started
//! by scripts/slurm-local.sh, `srun --mpi=pmix -n 2 trainer train` trains exactly as
//! `mpirun -np 2` does (skipped without SLURM unless RECO_REQUIRE_SLURM=1, as CI sets).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use trainer::distributed::{self, mpi::MpiGroup, Launch, ProcessGroup};

mod common;

// TRAINER: the `trainer` binary, built with the same features as this test.
use common::{text, BIN as TRAINER};

/// A failing rank must end the job well within this.
const TIMEOUT: Duration = Duration::from_secs(120);
/// The training scenarios: 10-45 s each on the shared 2-core machine under load.
const TRAINING_TIMEOUT: Duration = Duration::from_secs(600);

fn timeout(scenario: &str) -> Duration {
    match scenario {
        "sync_bn_steps" | "train_loop" | "trainer_cli" | "trainer_dpt" | "trainer_signal"
        | "srun" => TRAINING_TIMEOUT,
        _ => TIMEOUT,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let launched = std::env::var_os("OMPI_COMM_WORLD_RANK").is_some()
        || std::env::var_os("PMI_RANK").is_some();
    // libtest-style flags (`--nocapture`) are accepted and ignored by the driver; a
    // word selects the scenarios whose name contains it.
    let scenario = args.get(1).filter(|a| !a.starts_with('-')).cloned();
    let code = match (launched, scenario) {
        (true, Some(s)) => rank_main(&s, &args[2..]),
        (true, None) => {
            eprintln!("started by mpirun without a scenario");
            2
        }
        (false, filter) => driver(filter.as_deref()),
    };
    std::process::exit(code)
}

// ---------------------------------------------------------------- driver

struct Outcome {
    success: bool,
    output: String,
    took: Duration,
}

/// This test binary as both ranks of `scenario` (`extra`: its further arguments).
fn mpirun(scenario: &str, extra: &[&str]) -> Result<Outcome> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let mut args = vec![scenario.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    mpirun_program(scenario, &exe, &args)
}

/// `mpirun -np 2 program args...`, one rayon thread per rank, killed after
/// [`timeout`]`(scenario)`.
fn mpirun_program(scenario: &str, program: &Path, args: &[String]) -> Result<Outcome> {
    let mpirun = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let start = Instant::now();
    let mut child = Command::new(&mpirun)
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(program)
        .args(args)
        .env("RAYON_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {mpirun} (install Open MPI: apt-get install openmpi-bin libopenmpi-dev)"
            )
        })?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let limit = timeout(scenario);
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!(
                "{scenario}: mpirun still running after {limit:?} (a rank hangs)\n{}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    Ok(Outcome {
        success: out.status.success(),
        output: text(&out),
        took: start.elapsed(),
    })
}

fn both_ranks_report(out: &Outcome, scenario: &str, what: &str) -> Result<()> {
    ensure!(out.success, "{scenario} failed:\n{}", out.output);
    for r in 0..2 {
        ensure!(
            out.output.contains(&format!("rank {r} of 2: {what} ok")),
            "rank {r} did not report:\n{}",
            out.output
        );
    }
    Ok(())
}

fn check(scenario: &str) -> Result<Duration> {
    match scenario {
        "trainer_cli" => return check_trainer_cli(),
        "trainer_dpt" => return check_trainer_dpt(),
        "trainer_signal" => return check_trainer_signal(),
        "srun" => return check_srun(),
        _ => {}
    }
    let dir = tempfile::tempdir()?;
    let run_dir = dir.path().join("run");
    let run_dir_arg = run_dir.to_str().context("a UTF-8 temporary path")?;
    let out = match scenario {
        "train_loop" => mpirun(scenario, &[run_dir_arg])?,
        _ => mpirun(scenario, &[])?,
    };
    match scenario {
        "collectives" => both_ranks_report(&out, scenario, "collectives")?,
        "sync_bn_steps" => both_ranks_report(&out, scenario, "sync-bn steps")?,
        "train_loop" => {
            both_ranks_report(&out, scenario, "train loop")?;
            check_run_folder(&run_dir, 3)?;
            // One process cannot continue the streams of two ranks.
            let single = Command::new(TRAINER)
                .args(["train", "--resume", "--out", run_dir_arg])
                .output()?;
            let text = text(&single);
            ensure!(
                !single.status.success()
                    && text.contains("written by 2 rank(s) but this run has 1"),
                "resuming a 2-rank state on one process should fail clearly:\n{text}"
            );
        }
        failing => {
            ensure!(
                !out.success,
                "{failing}: the job succeeded although rank 1 failed:\n{}",
                out.output
            );
            ensure!(
                !out.output.contains("rank 0 passed the all-reduce"),
                "{failing}: rank 0 finished an all-reduce rank 1 never joined:\n{}",
                out.output
            );
            let expected = match failing {
                "error" => "error on rank 1 of 2: rank 1 fails on purpose",
                "panic" => "panic on an MPI rank",
                _ => "",
            };
            ensure!(
                out.output.contains(expected),
                "{failing}: no `{expected}` in the output:\n{}",
                out.output
            );
        }
    }
    Ok(out.took)
}

/// The run folder of a 2-rank run of `iters` steps, logged every step and evaluated at
/// the end: written once (by rank 0), and it says how many ranks wrote it.
fn check_run_folder(dir: &Path, iters: usize) -> Result<()> {
    let metrics = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .with_context(|| format!("{}/metrics.jsonl", dir.display()))?;
    let kinds: Vec<String> = metrics
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok(format!(
                "{}@{}",
                v["kind"].as_str().unwrap_or("?"),
                v["step"]
            ))
        })
        .collect::<Result<_>>()?;
    let mut want: Vec<String> = (1..=iters).map(|s| format!("train@{s}")).collect();
    want.push(format!("eval@{iters}"));
    ensure!(
        kinds == want,
        "metrics.jsonl lines {kinds:?}, expected {want:?} (one writer)"
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    ensure!(
        config["distributed"]["world_size"] == 2,
        "config.json: {}",
        config["distributed"]
    );
    for f in ["state.safetensors", "last.safetensors", "curves.png"] {
        ensure!(dir.join(f).is_file(), "no {f} in {}", dir.display());
    }
    Ok(())
}

/// A tiny run of the `trainer` binary under `mpirun -np 2`, with `--sync-bn`.
fn check_trainer_cli() -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let args = format!(
        "train --sync-bn --iters 2 --eval-every 2 --log-every 1 --batch-size 2 --crop-size 32 \
         --val-limit 2 --num-queries 16 --num-negatives 32 --output-dim 16 --num-threads 1 \
         --seed 4 --out {}",
        run.display()
    );
    let args: Vec<String> = args.split_whitespace().map(String::from).collect();
    let out = mpirun_program("trainer_cli", Path::new(TRAINER), &args)?;
    ensure!(out.success, "mpirun trainer train failed:\n{}", out.output);
    ensure!(
        out.output
            .contains("data-parallel training on 2 ranks (mpi, synchronized batch norm)"),
        "no data-parallel banner:\n{}",
        out.output
    );
    ensure!(
        out.output.matches("last evaluation (step 2)").count() == 1,
        "rank 0 alone reports the result:\n{}",
        out.output
    );
    check_run_folder(&run, 2)?;
    Ok(out.took)
}

/// `mpirun -np 2 trainer train --network dpt`: DINOv2 + DPT (AdamW, gradients averaged
/// over the ranks, the encoder's unused `mask_token` without gradient on both) trains and
/// writes its run folder once.
fn check_trainer_dpt() -> Result<Duration> {
    let dir = tempfile::tempdir()?;
    let run = dir.path().join("run");
    let args = format!(
        "train --network dpt --iters 2 --eval-every 2 --log-every 1 --batch-size 2 --crop-size 42 \
         --val-limit 2 --num-queries 16 --num-negatives 32 --output-dim 16 --num-threads 1 \
         --seed 4 --out {}",
        run.display()
    );
    let args: Vec<String> = args.split_whitespace().map(String::from).collect();
    let out = mpirun_program("trainer_dpt", Path::new(TRAINER), &args)?;
    ensure!(
        out.success,
        "mpirun trainer train --network dpt failed:\n{}",
        out.output
    );
    ensure!(
        out.output
            .contains("data-parallel training on 2 ranks (mpi"),
        "no data-parallel banner:\n{}",
        out.output
    );
    check_run_folder(&run, 2)?;
    Ok(out.took)
}

/// `trainer train` arguments of a tiny run of `iters` steps into `out`.
fn tiny_train(out: &Path, iters: usize, extra: &str) -> Vec<String> {
    format!(
        "train --iters {iters} --eval-every 3 --log-every 1 --batch-size 2 --crop-size 32 \
         --val-limit 2 --num-queries 16 --num-negatives 32 --output-dim 16 --num-threads 1 \
         --seed 5 {extra} --out {}",
        out.display()
    )
    .split_whitespace()
    .map(String::from)
    .collect()
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The pid of the process whose environment holds `tag` and OMPI_COMM_WORLD_RANK=`rank`.
fn rank_pid(tag: &str, rank: usize) -> Option<u32> {
    let want_rank = format!("OMPI_COMM_WORLD_RANK={rank}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if vars.contains(&tag.as_bytes()) && vars.contains(&want_rank.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// SIGUSR1 to rank 1 alone after a random logged step of rank 0: both ranks stop after
/// the same step, rank 0 writes the state, and the resumed run ends as an uninterrupted
/// one (weights compared bit for bit).
fn check_trainer_signal() -> Result<Duration> {
    let start = Instant::now();
    let dir = tempfile::tempdir()?;
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let iters = 6;
    let out = mpirun_program(
        "trainer_signal",
        Path::new(TRAINER),
        &tiny_train(&a, iters, ""),
    )?;
    ensure!(out.success, "the uninterrupted run failed:\n{}", out.output);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .subsec_nanos() as usize;
    let at = 1 + nanos % (iters - 2);
    let tag = format!("RECO_TEST_TAG={}-{nanos}", std::process::id());
    let (key, value) = tag.split_once('=').context("a tag")?;
    let mpirun = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let mut child = Command::new(&mpirun)
        .args([
            "--allow-run-as-root",
            "--oversubscribe",
            "-np",
            "2",
            TRAINER,
        ])
        .args(tiny_train(&b, iters, ""))
        .env("RAYON_NUM_THREADS", "1")
        .env(key, value)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut log = String::new();
    let mut signalled = false;
    {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line?;
            if !signalled && line.starts_with(&format!("step {at}/")) {
                let pid = rank_pid(&tag, 1).context("rank 1's process")?;
                let status = Command::new("kill")
                    .args(["-USR1", &pid.to_string()])
                    .status()?;
                ensure!(status.success(), "kill -USR1 {pid}");
                signalled = true;
            }
            log.push_str(&line);
            log.push('\n');
            ensure!(
                start.elapsed() < TRAINING_TIMEOUT,
                "the signalled run hangs:\n{log}"
            );
        }
    }
    let status = child.wait()?;
    ensure!(signalled, "rank 0 never logged step {at}:\n{log}");
    ensure!(
        !status.success(),
        "the signalled job reported success:\n{log}"
    );
    ensure!(
        log.contains("SIGUSR1 received: stopped after step") && log.contains("resume with:"),
        "no clean stop on SIGUSR1 after step {at}:\n{log}"
    );
    ensure!(
        b.join("state.safetensors").is_file(),
        "no state written:\n{log}"
    );
    let mut resume = tiny_train(&b, iters, "");
    resume.push("--resume".into());
    let out = mpirun_program("trainer_signal", Path::new(TRAINER), &resume)?;
    ensure!(out.success, "the resumed run failed:\n{}", out.output);
    ensure!(
        read(&a.join("last.safetensors"))? == read(&b.join("last.safetensors"))?,
        "2 ranks: the weights after SIGUSR1 at step {at} and resume differ from an uninterrupted run's"
    );
    Ok(start.elapsed())
}

/// `srun --mpi=pmix -n 2 trainer train` on a local single-node SLURM against `mpirun -np 2`
/// with the same flags: the same weights, bit for bit.
fn check_srun() -> Result<Duration> {
    let start = Instant::now();
    let have_slurm = ["srun", "slurmctld", "slurmd", "munged"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !have_slurm {
        ensure!(
            std::env::var_os("RECO_REQUIRE_SLURM").is_none(),
            "RECO_REQUIRE_SLURM is set but SLURM is not installed (apt-get install slurm-wlm munge)"
        );
        println!("mpi::srun skipped: no SLURM here (apt-get install slurm-wlm munge)");
        return Ok(start.elapsed());
    }
    let dir = tempfile::tempdir()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/slurm-local.sh");
    let cluster = dir.path().join("slurm");
    let up = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&cluster)
        .output()?;
    ensure!(
        up.status.success(),
        "scripts/slurm-local.sh start failed:\n{}",
        text(&up)
    );
    let conf = cluster.join("slurm.conf");
    let result = (|| -> Result<()> {
        let (m, s) = (dir.path().join("mpirun"), dir.path().join("srun"));
        let out = mpirun_program("srun", Path::new(TRAINER), &tiny_train(&m, 3, ""))?;
        ensure!(out.success, "mpirun -np 2 failed:\n{}", out.output);
        let run = Command::new("srun")
            .args(["--mpi=pmix", "-n", "2", "--time=10", TRAINER])
            .args(tiny_train(&s, 3, ""))
            .env("SLURM_CONF", &conf)
            .env("RAYON_NUM_THREADS", "1")
            .output()?;
        let log = text(&run);
        ensure!(
            run.status.success(),
            "srun --mpi=pmix -n 2 trainer train failed:\n{log}"
        );
        ensure!(
            log.contains("data-parallel training on 2 ranks (mpi"),
            "srun's tasks did not train as 2 ranks:\n{log}"
        );
        ensure!(
            read(&m.join("last.safetensors"))? == read(&s.join("last.safetensors"))?,
            "srun -n 2 and mpirun -np 2 end with different weights"
        );
        // Without --mpi=pmix (this cluster's MpiDefault is none): a clear error.
        let plain = Command::new("srun")
            .args(["-n", "2", "--time=5", TRAINER])
            .args(tiny_train(&dir.path().join("plain"), 3, ""))
            .env("SLURM_CONF", &conf)
            .output()?;
        let log = text(&plain);
        ensure!(
            !plain.status.success() && log.contains("srun --mpi=pmix"),
            "srun without an MPI plugin should fail naming --mpi=pmix:\n{log}"
        );
        Ok(())
    })();
    let down = Command::new("bash")
        .arg(&script)
        .arg("stop")
        .arg(&cluster)
        .output()?;
    result?;
    ensure!(
        down.status.success(),
        "scripts/slurm-local.sh stop failed:\n{}",
        text(&down)
    );
    Ok(start.elapsed())
}

const SCENARIOS: [&str; 10] = [
    "collectives",
    "sync_bn_steps",
    "train_loop",
    "trainer_cli",
    "trainer_dpt",
    "trainer_signal",
    "srun",
    "error",
    "panic",
    "kill",
];

/// Runs every scenario, or those whose name contains `filter`.
fn driver(filter: Option<&str>) -> i32 {
    let mut failed = 0;
    let chosen: Vec<&str> = SCENARIOS
        .into_iter()
        .filter(|s| filter.is_none_or(|f| s.contains(f)))
        .collect();
    for &scenario in &chosen {
        match check(scenario) {
            Ok(took) => println!("test mpi::{scenario} (2 ranks) ... ok ({took:.1?})"),
            Err(e) => {
                println!("test mpi::{scenario} (2 ranks) ... FAILED\n{e:#}");
                failed += 1;
            }
        }
    }
    println!(
        "mpi tests: {} passed, {failed} failed",
        chosen.len() - failed
    );
    i32::from(failed > 0)
}

// ---------------------------------------------------------------- ranks

fn rank_main(scenario: &str, extra: &[String]) -> i32 {
    let group = match Launch::from_env()
        .map_err(anyhow::Error::from)
        .and_then(|l| Ok(MpiGroup::init(&l)?))
    {
        Ok(g) => g.with_bucket_bytes(64),
        Err(e) => {
            eprintln!("MPI setup failed: {e:#}");
            return 2;
        }
    };
    let group: Arc<dyn ProcessGroup> = Arc::new(group);
    let result = distributed::run_or_abort(group.as_ref(), || match scenario {
        "collectives" => collectives(&group),
        "sync_bn_steps" => sync_bn_steps(&group),
        "train_loop" => train_loop(
            &group,
            Path::new(extra.first().context("train_loop needs the run folder")?),
        ),
        "error" | "panic" | "kill" => failing_rank(group.as_ref(), scenario),
        other => anyhow::bail!("unknown scenario {other}"),
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}

fn failing_rank(group: &dyn ProcessGroup, how: &str) -> Result<()> {
    let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?;
    // One collective both ranks join: the failure comes mid-run, not at start-up.
    group.all_reduce_sum(std::slice::from_ref(&x))?;
    if group.rank() == 1 {
        match how {
            "error" => anyhow::bail!("rank 1 fails on purpose"),
            "panic" => panic!("rank 1 panics on purpose"),
            _ => {
                let kill = format!("kill -9 {}", std::process::id());
                Command::new("sh").args(["-c", &kill]).status()?;
                std::thread::sleep(Duration::from_secs(30));
                anyhow::bail!("rank 1 survived kill -9")
            }
        }
    }
    // Rank 0: waits in a collective rank 1 never joins.
    group.all_reduce_sum(&[x])?;
    println!("rank 0 passed the all-reduce");
    Ok(())
}

fn collectives(group: &Arc<dyn ProcessGroup>) -> Result<()> {
    let (rank, size) = (group.rank(), group.world_size());
    ensure!(size == 2, "expected 2 ranks, got {size}");
    let dev = Device::Cpu;
    let r = rank as f64;

    // Mixed dtypes and sizes over 64-byte buckets: several buckets, shapes kept.
    let a = (Tensor::arange(0f32, 6., &dev)?.reshape((2, 3))? + r)?;
    let b = Tensor::full(10f64 * (r + 1.0), (5,), &dev)?;
    let c = (Tensor::arange(0f32, 40., &dev)? * (r + 1.0))?;
    let list = [a, b, c];
    ensure!(
        distributed::buckets(&list, group.bucket_bytes()).len() >= 3,
        "the test should span several buckets"
    );
    let sum = group.all_reduce_sum(&list)?;
    ensure!(sum[0].dims() == [2, 3] && sum[2].dims() == [40]);
    ensure!(sum[0].to_vec2::<f32>()? == vec![vec![1., 3., 5.], vec![7., 9., 11.]]);
    ensure!(sum[1].to_vec1::<f64>()? == vec![30.; 5]);
    let want: Vec<f32> = (0..40).map(|i| 3.0 * i as f32).collect();
    ensure!(sum[2].to_vec1::<f32>()? == want, "bucketed sum");
    let avg = distributed::average(group.as_ref(), &list[1..2])?;
    ensure!(avg[0].to_vec1::<f64>()? == vec![15.; 5]);

    // Broadcast: rank 0's values everywhere.
    let mine = Tensor::full(r + 7.0, (3, 2), &dev)?.to_dtype(DType::F32)?;
    let got = group.broadcast(&[mine])?;
    ensure!(got[0].dims() == [3, 2]);
    ensure!(
        got[0].flatten_all()?.to_vec1::<f32>()? == vec![7.; 6],
        "broadcast"
    );

    // Barrier: rank 0 cannot leave before rank 1 (which arrives 300 ms late) enters.
    let start = Instant::now();
    if rank == 1 {
        std::thread::sleep(Duration::from_millis(300));
    }
    group.barrier()?;
    if rank == 0 {
        let waited = start.elapsed();
        ensure!(
            waited >= Duration::from_millis(250),
            "barrier returned after {waited:?}"
        );
    }

    // The CPU kernel and the composed device path (what CUDA runs), f64 to 1e-10; the
    // composed path in f16 within f16's rounding.
    use reco_util::ops_path::{with_ops_path, OpsPath};
    for (path, dtype, tol) in [
        (OpsPath::Cpu, DType::F64, 1e-10),
        (OpsPath::Generic, DType::F64, 1e-10),
        (OpsPath::Generic, DType::F16, 2e-2),
    ] {
        with_ops_path(path, || sync_batch_norm(group, rank, dtype, tol))
            .with_context(|| format!("synchronized batch norm, {path:?} path, {dtype:?}"))?;
    }
    println!("rank {rank} of {size}: collectives ok");
    Ok(())
}

/// Synchronized batch norm over two MPI ranks equals plain batch norm over both ranks'
/// images in f64 (to `tol`, relative to the largest value): every rank knows the whole
/// batch and checks its own half, computed in `dtype`.
fn sync_batch_norm(
    group: &Arc<dyn ProcessGroup>,
    rank: usize,
    dtype: DType,
    tol: f64,
) -> Result<()> {
    use reco_models::ops::{batch_norm, Normalize};
    use reco_models::sync_bn::sync_batch_norm;
    let dev = Device::Cpu;
    let (b, c, h, w) = (2, 3, 4, 4);
    let per = b * c * h * w;
    // The same data on every rank (a fixed formula, no RNG).
    let full: Vec<f64> = (0..2 * per)
        .map(|i| 2.0 + ((i * 7919) % 113) as f64 / 37.0)
        .collect();
    let r: Vec<f64> = (0..2 * per)
        .map(|i| ((i * 104729) % 17) as f64 / 8.0 - 1.0)
        .collect();
    let weight = Tensor::new(&[1.5f64, 0.5, -1.0], &dev)?;
    let bias = Tensor::new(&[0.1f64, -0.2, 0.3], &dev)?;

    let x_full = Var::from_tensor(&Tensor::from_vec(full.clone(), (2 * b, c, h, w), &dev)?)?;
    let (y_full, _) = batch_norm(&x_full, &weight, &bias, Normalize::Batch, 1e-5, true)?;
    let r_full = Tensor::from_vec(r.clone(), (2 * b, c, h, w), &dev)?;
    let g_full = y_full.mul(&r_full)?.sum_all()?.backward()?;
    let dx_full = g_full.get(&x_full).context("no full gradient")?;

    let lo = rank * per;
    let x = Var::from_tensor(
        &Tensor::from_vec(full[lo..lo + per].to_vec(), (b, c, h, w), &dev)?.to_dtype(dtype)?,
    )?;
    let reducer = Arc::new(distributed::SyncBnGroup(group.clone()));
    let (y, stats) = sync_batch_norm(
        &x,
        &weight.to_dtype(dtype)?,
        &bias.to_dtype(dtype)?,
        reducer,
        1e-5,
        true,
    )?;
    ensure!(
        stats.count == (2 * b * h * w) as f64,
        "global count {}",
        stats.count
    );
    let rr = Tensor::from_vec(r[lo..lo + per].to_vec(), (b, c, h, w), &dev)?.to_dtype(dtype)?;
    let g = y.mul(&rr)?.sum_all()?.backward()?;
    let dx = g.get(&x).context("no gradient")?;

    let close = |got: &Tensor, want: &Tensor, what: &str| -> Result<()> {
        let d = rel_diff(got, want)?;
        ensure!(d < tol, "sync batch norm {what}: relative difference {d:e}");
        Ok(())
    };
    close(&y, &y_full.narrow(0, rank * b, b)?, "output")?;
    close(dx, &dx_full.narrow(0, rank * b, b)?, "input gradient")?;
    Ok(())
}

// ---------------------------------------------------------------- training

/// Largest `|got − want|` relative to the largest `|want|` (at least 1).
fn rel_diff(got: &Tensor, want: &Tensor) -> Result<f64> {
    let got = got.to_dtype(DType::F64)?.flatten_all()?;
    let want = want.to_dtype(DType::F64)?.flatten_all()?;
    let scale = want.abs()?.max(0)?.to_scalar::<f64>()?.max(1.0);
    Ok((got - want)?.abs()?.max(0)?.to_scalar::<f64>()? / scale)
}

/// One network and its optimiser, as the learner's step uses them: forward, loss,
/// backward, `distributed::average_grads` (the learner's own), SGD.
struct Replica {
    vars: candle_nn::VarMap,
    net: reco_models::Network,
    sgd: trainer::optim::Sgd,
    trainable: Vec<Var>,
}

impl Replica {
    fn new(sync: Option<reco_models::SyncBn>) -> Result<Self> {
        use reco_models::{Backbone, DeepLabConfig, NetworkKind};
        let vars = candle_nn::VarMap::new();
        let cfg = DeepLabConfig {
            backbone: Backbone::ResNet18,
            output_stride: 16,
            num_classes: 3,
            output_dim: 4,
        };
        let net = reco_models::Network::new(
            NetworkKind::DeepLabV3Plus,
            &cfg,
            candle_nn::VarBuilder::from_varmap(&vars, DType::F64, &Device::Cpu),
        )?
        .with_sync_bn(sync);
        reco_models::init_seeded(&vars, 21)?;
        let trainable: Vec<(String, Var)> =
            reco_models::trainable_vars(&vars)?.into_iter().collect();
        let sgd = trainer::optim::Sgd::new(trainable.clone(), 0.9, 5e-4);
        let trainable = trainable.into_iter().map(|(_, v)| v).collect();
        Ok(Self {
            vars,
            net,
            sgd,
            trainable,
        })
    }

    /// One step on images `lo..lo+n` of the fixed global batch of step `step`; returns
    /// this replica's loss and its (averaged, with `group`) gradients in `trainable` order.
    fn step(
        &mut self,
        group: &dyn ProcessGroup,
        step: usize,
        lo: usize,
        n: usize,
    ) -> Result<(f64, Vec<Tensor>)> {
        use reco_models::ops::resize_bilinear;
        const SIDE: usize = 32;
        let dev = Device::Cpu;
        let pixels = SIDE * SIDE;
        let image: Vec<f64> = (0..n * 3 * pixels)
            .map(|i| {
                let g = lo * 3 * pixels + i + 7 * step;
                ((g * 7919) % 101) as f64 / 50.0 - 1.0
            })
            .collect();
        let labels: Vec<i64> = (0..n * pixels)
            .map(|i| (((lo * pixels + i) / 11 + step) % 3) as i64)
            .collect();
        let x = Tensor::from_vec(image, (n, 3, SIDE, SIDE), &dev)?;
        let y = Tensor::from_vec(labels, (n, SIDE, SIDE), &dev)?;
        let (pred, rep) = self.net.forward_t(&x, true)?;
        let pred = resize_bilinear(&pred, SIDE, SIDE, true)?;
        // Both means over this replica's images: equal counts per rank, so the ranks'
        // mean is the loss of the whole batch.
        let loss = (reco_loss::supervised_loss(&pred, &y)? + (rep.sqr()?.mean_all()? * 0.1)?)?;
        let mut grads = loss.backward()?;
        distributed::average_grads(group, &self.trainable, &mut grads)?;
        let g = self
            .trainable
            .iter()
            .map(|v| grads.get(v.as_tensor()).cloned().context("a gradient"))
            .collect::<Result<Vec<_>>>()?;
        self.sgd.step(&grads, 0.01)?;
        Ok((loss.to_scalar::<f64>()?, g))
    }
}

/// 2 ranks x 2 images with synchronized batch norm == 1 rank x 4 images, over 3 steps.
fn sync_bn_steps(group: &Arc<dyn ProcessGroup>) -> Result<()> {
    let (rank, b) = (group.rank(), 2);
    let reducer: Arc<dyn reco_models::sync_bn::StatsAllReduce> =
        Arc::new(distributed::SyncBnGroup(group.clone()));
    let mut ranked = Replica::new(Some(reco_models::SyncBn::new(reducer)))?;
    // The reference, on every rank: one process with the whole batch, plain batch norm.
    let mut whole = Replica::new(None)?;
    let alone = distributed::SingleProcess;
    let vars = |r: &Replica| -> Result<Vec<(String, Tensor)>> {
        Ok(reco_models::named_vars(&r.vars)?
            .into_iter()
            .map(|(k, v)| (k, v.as_detached_tensor()))
            .collect())
    };
    for step in 0..3 {
        let (loss, grads) = ranked.step(group.as_ref(), step, rank * b, b)?;
        let (want_loss, want_grads) = whole.step(&alone, step, 0, 2 * b)?;
        let mean_loss = group.all_reduce_sum(&[Tensor::new(&[loss], &Device::Cpu)?])?[0]
            .to_vec1::<f64>()?[0]
            / 2.0;
        let d = (mean_loss - want_loss).abs() / want_loss.abs().max(1.0);
        ensure!(d < 1e-10, "step {step}: loss {mean_loss} vs {want_loss}");
        ensure!(grads.len() == want_grads.len() && !grads.is_empty());
        for (i, (g, w)) in grads.iter().zip(&want_grads).enumerate() {
            let d = rel_diff(g, w)?;
            ensure!(d < 1e-10, "step {step}: gradient {i} differs by {d:e}");
        }
        for ((name, got), (_, want)) in vars(&ranked)?.iter().zip(&vars(&whole)?) {
            let d = rel_diff(got, want)?;
            ensure!(d < 1e-10, "after step {step}: {name} differs by {d:e}");
        }
        if rank == 0 {
            println!("step {step}: loss {mean_loss:.12} (one rank, whole batch: {want_loss:.12})");
        }
    }
    println!("rank {rank} of 2: sync-bn steps ok");
    Ok(())
}

/// 3 steps of the real training loop on 2 ranks, without synchronized batch norm.
fn train_loop(group: &Arc<dyn ProcessGroup>, out: &Path) -> Result<()> {
    use reco_data::DatasetKind;
    use trainer::train::config::TrainConfig;
    let rank = group.rank();
    let mut cfg = TrainConfig::for_dataset(DatasetKind::Synthetic);
    cfg.iters = 3;
    cfg.eval_every = 3;
    cfg.log_every = 1;
    cfg.batch_size = 2;
    cfg.crop_size = 32;
    cfg.val_limit = 2;
    cfg.num_queries = 16;
    cfg.num_negatives = 32;
    cfg.output_dim = 16;
    cfg.num_threads = 1;
    cfg.seed = 3;
    cfg.out = out.to_path_buf();
    let mut t = trainer::train::Trainer::in_group(cfg, trainer::train::Resume::No, group.clone())?;
    let summary = t.run(&mut |line| eprintln!("rank {rank}: {line}"))?;
    ensure!(
        summary.is_some() == (rank == 0),
        "rank {rank}: a summary only on rank 0"
    );
    let learner = t.learner();
    let teacher = learner.teacher().context("semi-supervised")?;
    // Trainable weights: rank 0's everywhere, bit for bit (student and teacher).
    for (who, vars) in [
        ("student", learner.student.trainable_vars()?),
        ("teacher", teacher.net.trainable_vars()?),
    ] {
        let mine: Vec<Tensor> = vars.values().map(|v| v.as_detached_tensor()).collect();
        let rank0 = group.broadcast(&mine)?;
        for ((name, m), r0) in vars.keys().zip(&mine).zip(&rank0) {
            let same = m.flatten_all()?.to_vec1::<f32>()? == r0.flatten_all()?.to_vec1::<f32>()?;
            ensure!(same, "rank {rank}: {who} {name} differs from rank 0's");
        }
    }
    // Running statistics follow each rank's own batches (no --sync-bn): they differ,
    // which shows that the ranks drew different images.
    let stats: Vec<(String, Tensor)> = learner
        .student
        .named_vars()?
        .into_iter()
        .filter(|(k, _)| reco_models::is_running_stat(k))
        .map(|(k, v)| (k, v.as_detached_tensor()))
        .collect();
    let mine: Vec<Tensor> = stats.iter().map(|(_, t)| t.clone()).collect();
    let rank0 = group.broadcast(&mine)?;
    let differing = mine
        .iter()
        .zip(&rank0)
        .map(|(m, r)| Ok(rel_diff(m, r)? > 0.0))
        .collect::<Result<Vec<bool>>>()?
        .into_iter()
        .filter(|d| *d)
        .count();
    ensure!(
        (rank == 0) == (differing == 0),
        "rank {rank}: {differing} of {} running statistics differ from rank 0's",
        stats.len()
    );
    // Rank 0 has written the run folder by now; the driver checks it.
    group.barrier()?;
    println!("rank {rank} of 2: train loop ok");
    Ok(())
}
