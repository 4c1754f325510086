//! The strong threshold δs over training: constant (the original's 0.97) or a linear ramp
//! that raises it to focus the ReCo loss on harder queries as the network gets confident.

use serde::{Deserialize, Serialize};

/// δs as a function of the training step. Serialises as
/// `{"kind":"constant","value":0.97}` or
/// `{"kind":"linear","start":0.9,"end":0.99,"from_step":0,"to_step":20000}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ThresholdSchedule {
    /// The same value at every step.
    Constant { value: f64 },
    /// `start` up to `from_step`, then linear to `end` at `to_step`, `end` afterwards.
    Linear {
        start: f64,
        end: f64,
        from_step: usize,
        to_step: usize,
    },
}

impl Default for ThresholdSchedule {
    /// The original's constant 0.97.
    fn default() -> Self {
        ThresholdSchedule::Constant { value: 0.97 }
    }
}

impl ThresholdSchedule {
    pub fn constant(value: f64) -> Self {
        ThresholdSchedule::Constant { value }
    }

    /// A ramp from `start` (at `from_step` and before) to `end` (at `to_step` and after).
    pub fn linear(start: f64, end: f64, from_step: usize, to_step: usize) -> Self {
        ThresholdSchedule::Linear {
            start,
            end,
            from_step,
            to_step,
        }
    }

    /// δs at training step `step` (0-based).
    pub fn value_at(&self, step: usize) -> f64 {
        match *self {
            ThresholdSchedule::Constant { value } => value,
            ThresholdSchedule::Linear {
                start,
                end,
                from_step,
                to_step,
            } => {
                if step <= from_step {
                    start
                } else if step >= to_step {
                    end
                } else {
                    let t = (step - from_step) as f64 / (to_step - from_step) as f64;
                    start + (end - start) * t
                }
            }
        }
    }

    /// Rejects values outside `[0, 1]` and ramps that end before they start.
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "strong threshold {name} must be a probability in [0, 1], got {v}"
                ))
            }
        };
        match *self {
            ThresholdSchedule::Constant { value } => check("value", value),
            ThresholdSchedule::Linear {
                start,
                end,
                from_step,
                to_step,
            } => {
                check("start", start)?;
                check("end", end)?;
                if to_step <= from_step {
                    return Err(format!(
                        "strong threshold ramp must end after it starts, got steps \
                         {from_step}..{to_step}"
                    ));
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for ThresholdSchedule {
    /// The form [`std::str::FromStr`] reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ThresholdSchedule::Constant { value } => write!(f, "{value}"),
            ThresholdSchedule::Linear {
                start,
                end,
                from_step,
                to_step,
            } => write!(f, "{start}..{end}@{from_step}..{to_step}"),
        }
    }
}

impl std::str::FromStr for ThresholdSchedule {
    type Err = String;

    /// `0.97` (constant) or `START..END@FROM..TO` (linear ramp over steps FROM..TO),
    /// e.g. `0.9..0.99@0..20000`. The result is validated.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let bad = || {
            format!(
                "invalid strong threshold `{s}`: expected a value like 0.97 or a ramp \
                 START..END@FROM..TO like 0.9..0.99@0..20000"
            )
        };
        let schedule = match s.split_once('@') {
            None => ThresholdSchedule::constant(s.parse().map_err(|_| bad())?),
            Some((values, steps)) => {
                let (start, end) = values.split_once("..").ok_or_else(bad)?;
                let (from, to) = steps.split_once("..").ok_or_else(bad)?;
                ThresholdSchedule::linear(
                    start.trim().parse().map_err(|_| bad())?,
                    end.trim().parse().map_err(|_| bad())?,
                    from.trim().parse().map_err(|_| bad())?,
                    to.trim().parse().map_err(|_| bad())?,
                )
            }
        };
        schedule.validate()?;
        Ok(schedule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_original_constant() {
        let s = ThresholdSchedule::default();
        assert_eq!(s.value_at(0), 0.97);
        assert_eq!(s.value_at(1_000_000), 0.97);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn linear_ramp_holds_interpolates_and_holds() {
        let s = ThresholdSchedule::linear(0.9, 0.99, 100, 200);
        assert_eq!(s.value_at(0), 0.9);
        assert_eq!(s.value_at(100), 0.9);
        assert!((s.value_at(150) - 0.945).abs() < 1e-12);
        assert!((s.value_at(175) - 0.9675).abs() < 1e-12);
        assert_eq!(s.value_at(200), 0.99);
        assert_eq!(s.value_at(10_000), 0.99);
        // Monotone between the ends.
        let v: Vec<f64> = (90..=210).map(|k| s.value_at(k)).collect();
        assert!(v.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn parses_prints_and_round_trips_through_json() {
        let c: ThresholdSchedule = "0.95".parse().unwrap();
        assert_eq!(c, ThresholdSchedule::constant(0.95));
        let r: ThresholdSchedule = " 0.9..0.99@0..20000 ".parse().unwrap();
        assert_eq!(r, ThresholdSchedule::linear(0.9, 0.99, 0, 20000));
        assert_eq!(r.to_string().parse::<ThresholdSchedule>().unwrap(), r);
        for s in [c, r, ThresholdSchedule::default()] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<ThresholdSchedule>(&json).unwrap(), s);
        }
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"kind":"linear","start":0.9,"end":0.99,"from_step":0,"to_step":20000}"#
        );
    }

    #[test]
    fn rejects_bad_values_and_backward_ramps() {
        for bad in [
            "",
            "abc",
            "1.5",
            "-0.1",
            "0.9..0.99",
            "0.9..0.99@5..5",
            "0.9..1.2@0..10",
            "0.9@0..10",
        ] {
            let e = bad.parse::<ThresholdSchedule>();
            assert!(e.is_err(), "{bad:?} parsed as {e:?}");
        }
        assert!(ThresholdSchedule::linear(0.9, 0.99, 10, 3)
            .validate()
            .is_err());
    }
}
