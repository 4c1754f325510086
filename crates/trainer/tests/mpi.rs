//! Two-rank tests of the MPI process group (cargo feature `mpi`, run by .ci/run):
//! `cargo test -p trainer --features mpi --test mpi`.
//!
//! Without a launcher this binary is the driver: for each scenario it starts
//! `mpirun -np 2` on itself (`$MPIRUN`, default `mpirun`) and checks the outcome within a
//! timeout. Started by mpirun, it is one rank of the named scenario:
//! - `collectives`: bucketed all-reduce, average, broadcast, barrier and synchronized
//!   batch norm (equal to plain batch norm over both ranks' images) are correct;
//! - `error`, `panic`, `kill`: rank 1 fails (returns an error / panics / is killed)
//!   while rank 0 waits in an all-reduce; the job must end with an error, not hang.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor, Var};
use trainer::dist::{self, mpi::MpiGroup, Launch, ProcessGroup};

/// A failing rank must end the job well within this.
const TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let launched = std::env::var_os("OMPI_COMM_WORLD_RANK").is_some()
        || std::env::var_os("PMI_RANK").is_some();
    // libtest-style flags (`--nocapture`, filters) are accepted and ignored by the driver.
    let scenario = args.get(1).filter(|a| !a.starts_with('-')).cloned();
    let code = match (launched, scenario) {
        (true, Some(s)) => rank_main(&s),
        (true, None) => {
            eprintln!("started by mpirun without a scenario");
            2
        }
        (false, _) => driver(),
    };
    std::process::exit(code)
}

// ---------------------------------------------------------------- driver

struct Outcome {
    success: bool,
    output: String,
    took: Duration,
}

fn mpirun(scenario: &str) -> Result<Outcome> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let mpirun = std::env::var("MPIRUN").unwrap_or_else(|_| "mpirun".into());
    let start = Instant::now();
    let mut child = Command::new(&mpirun)
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
        .arg(&exe)
        .arg(scenario)
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
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            anyhow::bail!(
                "{scenario}: mpirun still running after {TIMEOUT:?} (a rank hangs)\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    Ok(Outcome {
        success: out.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        took: start.elapsed(),
    })
}

fn check(scenario: &str) -> Result<Duration> {
    let out = mpirun(scenario)?;
    match scenario {
        "collectives" => {
            ensure!(out.success, "collectives failed:\n{}", out.output);
            for r in 0..2 {
                ensure!(
                    out.output
                        .contains(&format!("rank {r} of 2: collectives ok")),
                    "rank {r} did not report:\n{}",
                    out.output
                );
            }
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

fn driver() -> i32 {
    let mut failed = 0;
    for scenario in ["collectives", "error", "panic", "kill"] {
        match check(scenario) {
            Ok(took) => println!("test mpi::{scenario} (2 ranks) ... ok ({took:.1?})"),
            Err(e) => {
                println!("test mpi::{scenario} (2 ranks) ... FAILED\n{e:#}");
                failed += 1;
            }
        }
    }
    println!("mpi tests: {} passed, {failed} failed", 4 - failed);
    i32::from(failed > 0)
}

// ---------------------------------------------------------------- ranks

fn rank_main(scenario: &str) -> i32 {
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
    let result = dist::run_or_abort(group.as_ref(), || match scenario {
        "collectives" => collectives(&group),
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
        dist::buckets(&list, group.bucket_bytes()).len() >= 3,
        "the test should span several buckets"
    );
    let sum = group.all_reduce_sum(&list)?;
    ensure!(sum[0].dims() == [2, 3] && sum[2].dims() == [40]);
    ensure!(sum[0].to_vec2::<f32>()? == vec![vec![1., 3., 5.], vec![7., 9., 11.]]);
    ensure!(sum[1].to_vec1::<f64>()? == vec![30.; 5]);
    let want: Vec<f32> = (0..40).map(|i| 3.0 * i as f32).collect();
    ensure!(sum[2].to_vec1::<f32>()? == want, "bucketed sum");
    let avg = dist::average(group.as_ref(), &list[1..2])?;
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

    sync_batch_norm(group, rank)?;
    println!("rank {rank} of {size}: collectives ok");
    Ok(())
}

/// Synchronized batch norm over two MPI ranks equals plain batch norm over both ranks'
/// images (f64, 1e-10): every rank knows the whole batch and checks its own half.
fn sync_batch_norm(group: &Arc<dyn ProcessGroup>, rank: usize) -> Result<()> {
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
    let x = Var::from_tensor(&Tensor::from_vec(
        full[lo..lo + per].to_vec(),
        (b, c, h, w),
        &dev,
    )?)?;
    let reducer = Arc::new(dist::SyncBnGroup(group.clone()));
    let (y, stats) = sync_batch_norm(&x, &weight, &bias, reducer, 1e-5, true)?;
    ensure!(
        stats.count == (2 * b * h * w) as f64,
        "global count {}",
        stats.count
    );
    let rr = Tensor::from_vec(r[lo..lo + per].to_vec(), (b, c, h, w), &dev)?;
    let g = y.mul(&rr)?.sum_all()?.backward()?;
    let dx = g.get(&x).context("no gradient")?;

    let close = |got: &Tensor, want: &Tensor, what: &str| -> Result<()> {
        let d = (got - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f64>()?;
        ensure!(d < 1e-10, "sync batch norm {what}: max difference {d:e}");
        Ok(())
    };
    close(&y, &y_full.narrow(0, rank * b, b)?, "output")?;
    close(dx, &dx_full.narrow(0, rank * b, b)?, "input gradient")?;
    Ok(())
}
