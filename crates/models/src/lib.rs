//! DeepLabV3+ on torchvision-layout ResNets for ReCo, identical to the original
//! PyTorch network (`lorenmt/reco`, `network/deeplabv3.py`), its DeepLabV2, and DPT on
//! a DINOv2 encoder as UniMatch V2 builds it ([`dpt`]).
//!
//! Built over a [`candle_nn::VarMap`], every parameter and batch-norm running statistic
//! is a variable named as in the original `state_dict`, so checkpoints move between this
//! crate and the original code (see [`checkpoint`]).

pub mod checkpoint;
pub mod deeplab;
pub mod deeplab_base;
pub mod deeplabv2;
pub mod dpt;
pub mod init;
pub mod layers;
pub mod meta;
pub mod network;
pub mod ops;
pub mod precision;
/// The parity fixtures' "formula weights" and a relative-error helper: test scaffolding
/// for this crate's tests and `trainer check`, not part of the model API.
#[cfg(feature = "test-support")]
pub mod reference;
pub mod resnet;
pub mod segment;
pub mod sync_bn;
pub mod vars;
pub mod vit;

pub use checkpoint::{
    export_state_dict, infer_config, load_backbone, load_checkpoint, load_checkpoint_tensors,
    read_tensors, CheckpointError,
};
pub use deeplab::{DeepLabConfig, DeepLabV3Plus, MIN_INPUT_SIZE};
pub use deeplab_base::DeepLab;
pub use deeplabv2::{DeepLabV2, DEEPLABV2_OUTPUT_STRIDE, DEEPLABV2_RATES};
pub use dpt::{Dpt, DptLayout, DPT_OUTPUT_STRIDE};
pub use init::init_seeded;
pub use layers::Mode;
pub use meta::{default_output_stride, resolve_meta, MetaFallback, ASSUMED_OUTPUT_STRIDE};
pub use meta::{export_with_meta, read_meta, CheckpointMeta, MetaError, Normalization};
pub use network::{Network, NetworkKind};
pub use precision::Precision;
pub use resnet::Backbone;
pub use segment::{PredictOptions, Prediction, RgbImage, SegmentError, Segmenter, SlidingWindow};
pub use sync_bn::SyncBn;
pub use vars::{is_encoder, is_running_stat, is_trainable, named_vars, trainable_vars};
