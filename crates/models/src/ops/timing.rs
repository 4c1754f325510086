//! Wall time of this crate's CPU ops, by op, for benchmarks' profile of a step
//! (`benches/deeplab.rs --profile`).
//!
//! candle runs every op of a graph, and the backward pass, one after another on the
//! calling thread, and each of our ops returns only when its worker threads are done; so
//! the time between entering and leaving an op's CPU kernel is that op's share of the
//! step's wall time, and what the step spends outside all of them is candle's own ops
//! (element-wise, copies, matmuls) and its backward bookkeeping. Per thread, like
//! [`super::flops`]; off until [`start`]; an op nested in another is counted in the
//! outer one only.

use std::cell::RefCell;
use std::time::Instant;

/// One op's total over the counted span.
#[derive(Clone, Debug, PartialEq)]
pub struct OpTime {
    /// The op's name (`CustomOp::name`, e.g. `reco-conv2d-weight-grad`).
    pub name: &'static str,
    pub seconds: f64,
    pub calls: usize,
}

#[derive(Default)]
struct State {
    ops: Vec<OpTime>,
    depth: usize,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Starts timing this thread's ops from zero.
pub fn start() {
    STATE.with(|s| *s.borrow_mut() = Some(State::default()));
}

/// Stops timing and returns each op's total since [`start`], in the order first seen
/// (empty when not started).
pub fn stop() -> Vec<OpTime> {
    STATE
        .with(|s| s.borrow_mut().take())
        .map(|s| s.ops)
        .unwrap_or_default()
}

/// Times the enclosing kernel until the guard drops (nothing while timing is off).
pub(crate) fn scope(name: &'static str) -> Option<Scope> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let state = s.as_mut()?;
        state.depth += 1;
        Some(Scope {
            name,
            start: Instant::now(),
        })
    })
}

pub(crate) struct Scope {
    name: &'static str,
    start: Instant,
}

impl Drop for Scope {
    fn drop(&mut self) {
        let seconds = self.start.elapsed().as_secs_f64();
        STATE.with(|s| {
            let mut s = s.borrow_mut();
            let Some(state) = s.as_mut() else { return };
            state.depth -= 1;
            if state.depth > 0 {
                return;
            }
            match state.ops.iter_mut().find(|o| o.name == self.name) {
                Some(o) => {
                    o.seconds += seconds;
                    o.calls += 1;
                }
                None => state.ops.push(OpTime {
                    name: self.name,
                    seconds,
                    calls: 1,
                }),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use crate::ops::{conv2d, ConvParams};

    #[test]
    fn a_convolution_step_is_timed_by_op() {
        let x = Var::randn(0f32, 1.0, (2, 3, 9, 7), &Device::Cpu).unwrap();
        let w = Var::randn(0f32, 1.0, (4, 3, 3, 3), &Device::Cpu).unwrap();
        let p = ConvParams {
            stride: 1,
            padding: 1,
            dilation: 1,
        };
        assert!(super::stop().is_empty(), "not timing before start");
        super::start();
        let y = conv2d(x.as_tensor(), w.as_tensor(), p).unwrap();
        y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let ops = super::stop();
        let names: Vec<_> = ops.iter().map(|o| o.name).collect();
        assert_eq!(
            names,
            [
                "reco-conv2d",
                "reco-conv2d-input-grad",
                "reco-conv2d-weight-grad"
            ]
        );
        assert!(ops.iter().all(|o| o.calls == 1 && o.seconds > 0.0));
    }
}
