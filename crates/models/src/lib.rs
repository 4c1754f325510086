//! DeepLabV3+ on torchvision-layout ResNets for ReCo, identical to the original
//! PyTorch network (`lorenmt/reco`, `network/deeplabv3.py`).
//!
//! Built over a [`candle_nn::VarMap`], every parameter and batch-norm running statistic
//! is a variable named as in the original `state_dict`, so checkpoints move between this
//! crate and the original code (see [`checkpoint`]).

pub mod checkpoint;
pub mod deeplab;
pub mod init;
pub mod layers;
pub mod ops;
pub mod reference;
pub mod resnet;
pub mod sync_bn;
pub mod vars;

pub use checkpoint::{
    export_state_dict, infer_config, load_backbone, load_checkpoint, load_checkpoint_tensors,
    read_tensors, CheckpointError,
};
pub use deeplab::{DeepLabConfig, DeepLabV3Plus, MIN_INPUT_SIZE};
pub use init::init_seeded;
pub use layers::Mode;
pub use resnet::Backbone;
pub use vars::{is_running_stat, is_trainable, named_vars, trainable_vars};
