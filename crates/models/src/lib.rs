//! reco-models (work in progress)
