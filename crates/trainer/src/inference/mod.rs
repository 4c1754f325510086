//! A trained network at work outside training: rebuilt from a checkpoint file
//! ([`checkpoint`]), its class colours ([`palette`]), and photos segmented into masks
//! and overlays ([`segment`]).

pub mod checkpoint;
pub mod palette;
pub mod segment;
