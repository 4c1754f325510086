//! reco-loss (work in progress)
