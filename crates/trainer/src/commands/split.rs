//! `trainer split`: samples a labelled / unlabelled split, prints the labelled ids and a
//! per-class table of how many labelled images contain each class, and optionally saves
//! the split as JSON for `trainer train --split`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use reco_data::{class_table_named, open, Partial, Split};

use super::args::DataArgs;

#[derive(clap::Args, Debug, Clone)]
// The shared group makes --dataset optional; a split needs one.
#[command(mut_arg("dataset", |a| a.required(true)))]
pub struct SplitArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Number of labelled images; 0 = every training image is labelled.
    #[arg(long)]
    pub num_labels: usize,
    /// Seed of the sampler (same seed, same split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Partial labels for the labelled images: p0, p1, p5 or p25.
    #[arg(long)]
    pub partial: Option<Partial>,
    /// Write the split here as JSON.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &SplitArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let kind = args
        .data
        .dataset
        .context("which dataset? pass --dataset pascal, cityscapes, sun, synthetic or folder")?;
    let ds = open(kind, args.data.data_root.as_deref())?;
    let split = Split::sample(ds.as_ref(), args.num_labels, args.seed, args.partial)?;
    let counts = split.class_counts(ds.as_ref())?;
    writeln!(
        out,
        "{} split, seed {}: {} labelled, {} unlabelled{}",
        kind,
        args.seed,
        split.labelled.len(),
        split.unlabelled.len(),
        args.partial
            .map(|p| format!(", partial labels {p:?}").to_lowercase())
            .unwrap_or_default()
    )?;
    writeln!(out, "labelled ids:")?;
    for id in &split.labelled {
        writeln!(out, "  {id}")?;
    }
    writeln!(out, "labelled images per class:")?;
    write!(out, "{}", class_table_named(&ds.class_names(), &counts))?;
    if let Some(path) = &args.out {
        split
            .save(path)
            .with_context(|| format!("saving the split to {}", path.display()))?;
        writeln!(out, "wrote {}", path.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use reco_data::DatasetKind;

    type Wrapper = crate::commands::Wrapper<SplitArgs>;

    #[test]
    fn split_prints_ids_and_table_and_saves_a_loadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        let w = Wrapper::try_parse_from([
            "split",
            "--dataset",
            "synthetic",
            "--num-labels",
            "7",
            "--seed",
            "2",
            "--out",
            path.to_str().unwrap(),
        ])
        .unwrap();
        let mut buf = Vec::new();
        run(&w.args, &mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("7 labelled, 1993 unlabelled"), "{text}");
        assert!(text.contains("striped disc"), "{text}");
        let ds = open(DatasetKind::Synthetic, None).unwrap();
        let split = Split::load(&path, ds.as_ref()).unwrap();
        assert_eq!(split.labelled.len(), 7);
        for id in &split.labelled {
            assert!(text.contains(&format!("  {id}\n")));
        }
        // Table rows: every class count printed matches the split's.
        let counts = split.class_counts(ds.as_ref()).unwrap();
        for (c, n) in counts.iter().enumerate() {
            let name = DatasetKind::Synthetic.class_names()[c];
            let row = format!("{c:>5}  {name:<20} {n:>8}");
            assert!(text.contains(&row), "missing row {row:?} in {text}");
        }
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        assert!(
            Wrapper::try_parse_from(["split", "--dataset", "voc", "--num-labels", "3"]).is_err()
        );
        let w = Wrapper::try_parse_from([
            "split",
            "--dataset",
            "pascal",
            "--data-root",
            "/nonexistent/reco",
            "--num-labels",
            "3",
        ])
        .unwrap();
        let e = run(&w.args, &mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("cargo xtask fetch-data --dataset pascal"), "{e}");
    }
}
