//! reco-data (work in progress)
