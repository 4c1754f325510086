//! Segmentation metrics from a confusion matrix over all evaluated pixels (as the
//! original's `ConfMatrix`): per-class IoU, mean IoU over the classes that occur in the
//! labels or the predictions, and pixel accuracy.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug)]
pub struct ConfusionMatrix {
    num_classes: usize,
    /// `counts[target * C + prediction]`.
    counts: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegMetrics {
    pub miou: f64,
    pub pixel_acc: f64,
    /// IoU per class; `None` where the class occurs neither in labels nor predictions.
    pub per_class_iou: Vec<Option<f64>>,
}

impl ConfusionMatrix {
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            counts: vec![0; num_classes * num_classes],
        }
    }

    /// Adds pixels; targets < 0 (ignore) are skipped. Predictions must be class ids.
    pub fn add(&mut self, targets: &[i64], predictions: &[u32]) -> anyhow::Result<()> {
        anyhow::ensure!(
            targets.len() == predictions.len(),
            "confusion matrix: {} targets but {} predictions",
            targets.len(),
            predictions.len()
        );
        let c = self.num_classes;
        for (&t, &p) in targets.iter().zip(predictions) {
            if t < 0 {
                continue;
            }
            let (t, p) = (t as usize, p as usize);
            anyhow::ensure!(t < c && p < c, "class id {} / {} out of range 0..{c}", t, p);
            self.counts[t * c + p] += 1;
        }
        Ok(())
    }

    pub fn metrics(&self) -> SegMetrics {
        let c = self.num_classes;
        let total: u64 = self.counts.iter().sum();
        let correct: u64 = (0..c).map(|i| self.counts[i * c + i]).sum();
        let per_class_iou: Vec<Option<f64>> = (0..c)
            .map(|i| {
                let tp = self.counts[i * c + i];
                let row: u64 = (0..c).map(|j| self.counts[i * c + j]).sum();
                let col: u64 = (0..c).map(|j| self.counts[j * c + i]).sum();
                let union = row + col - tp;
                (union > 0).then(|| tp as f64 / union as f64)
            })
            .collect();
        let present: Vec<f64> = per_class_iou.iter().flatten().copied().collect();
        SegMetrics {
            miou: if present.is_empty() {
                0.0
            } else {
                present.iter().sum::<f64>() / present.len() as f64
            },
            pixel_acc: if total == 0 {
                0.0
            } else {
                correct as f64 / total as f64
            },
            per_class_iou,
        }
    }
}

impl SegMetrics {
    /// A table of per-class IoU, then mIoU and pixel accuracy, in percent.
    pub fn table(&self, class_names: &[&str]) -> String {
        let mut s = String::from("| class | IoU (%) |\n| --- | --- |\n");
        for (i, iou) in self.per_class_iou.iter().enumerate() {
            let name = class_names.get(i).copied().unwrap_or("?");
            match iou {
                Some(v) => s.push_str(&format!("| {name} | {:.2} |\n", 100.0 * v)),
                None => s.push_str(&format!("| {name} | - |\n")),
            }
        }
        s.push_str(&format!("| **mIoU** | **{:.2}** |\n", 100.0 * self.miou));
        s.push_str(&format!(
            "| pixel accuracy | {:.2} |\n",
            100.0 * self.pixel_acc
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_from_counts() {
        let mut m = ConfusionMatrix::new(3);
        // class 0: 2 right, 1 predicted as 1; class 1: 1 right; ignore skipped; class 2 absent.
        m.add(&[0, 0, 0, 1, -1], &[0, 0, 1, 1, 2]).unwrap();
        let r = m.metrics();
        assert_eq!(r.per_class_iou, vec![Some(2.0 / 3.0), Some(0.5), None]);
        assert!((r.miou - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        assert!((r.pixel_acc - 0.75).abs() < 1e-12);
        assert!(m.add(&[3], &[0]).is_err());
    }
}
