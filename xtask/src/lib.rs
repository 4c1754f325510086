//! `cargo xtask`: getting data and weights for the ReCo workspace.
//!
//! - `fetch-data --dataset pascal|cityscapes|sun`: verified, resumable downloads that
//!   prepare exactly the folder layouts `crates/data` reads (see each dataset module).
//! - `fetch-weights --backbone resnet101|dinov2-s|...`: ImageNet ResNet or DINOv2 weights from
//!   the Hugging Face Hub (DINOv2 converted to timm's names).
//! - `convert --input x.pth --output x.safetensors`: PyTorch checkpoints to safetensors.
//!
//! The modules are a library so that integration tests can drive them; `main.rs` is the
//! command line. URLs and checksums live in `sources.rs` only.

pub mod checksum;
pub mod cityscapes;
pub mod convert;
pub mod download;
pub mod extract;
pub mod fetch;
pub mod labels;
pub mod mat5;
pub mod pascal;
pub mod prepare;
pub mod progress;
pub mod sources;
pub mod sun;
pub mod weights;
