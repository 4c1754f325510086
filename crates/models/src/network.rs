//! Every network behind one type (the original code's two DeepLabs and DPT on DINOv2),
//! so that training, evaluation and checkpoint loading hold "the network" without caring
//! which one it is.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::deeplab::{DeepLabConfig, DeepLabV3Plus};
use crate::deeplabv2::DeepLabV2;
use crate::dpt::Dpt;
use crate::layers::Mode;
use crate::precision::Precision;
use crate::sync_bn::SyncBn;

/// Which network: the names are those stored in checkpoint metadata and used on the
/// command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum NetworkKind {
    /// DeepLabV3+ (`network/deeplabv3.py`), the paper's main network.
    #[default]
    DeepLabV3Plus,
    /// DeepLabV2 (`network/deeplabv2.py`, `--backbone deeplabv2` in the original).
    DeepLabV2,
    /// DPT on a DINOv2 encoder, as UniMatch V2 (`model/semseg/dpt.py`), with ReCo's
    /// representation head ([`crate::dpt`]).
    Dpt,
}

impl NetworkKind {
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::DeepLabV3Plus => "deeplabv3p",
            NetworkKind::DeepLabV2 => "deeplabv2",
            NetworkKind::Dpt => "dpt",
        }
    }

    pub fn all() -> [NetworkKind; 3] {
        [
            NetworkKind::DeepLabV3Plus,
            NetworkKind::DeepLabV2,
            NetworkKind::Dpt,
        ]
    }

    /// Whether the network takes a ResNet (the DeepLabs) or a DINOv2 ViT (DPT).
    pub fn takes_vit(self) -> bool {
        self == NetworkKind::Dpt
    }

    /// Whether the network runs at `output_stride`: 8, 16 or 32 for the DeepLabs, the
    /// patch size 14 for DPT.
    pub fn accepts_output_stride(self, output_stride: usize) -> bool {
        match self.takes_vit() {
            true => output_stride == crate::dpt::DPT_OUTPUT_STRIDE,
            false => crate::resnet::stage_dilations(output_stride).is_ok(),
        }
    }
}

impl std::str::FromStr for NetworkKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "deeplabv3p" | "deeplabv3plus" | "deeplabv3+" => Ok(NetworkKind::DeepLabV3Plus),
            "deeplabv2" => Ok(NetworkKind::DeepLabV2),
            "dpt" => Ok(NetworkKind::Dpt),
            _ => Err(format!(
                "unknown network {s:?}: expected deeplabv3p, deeplabv2 or dpt"
            )),
        }
    }
}

impl std::fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the networks, built over the same kind of VarBuilder and with the same
/// forward signature: `(prediction, representation)`.
// Held once per model, never in bulk: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Network {
    DeepLabV3Plus(DeepLabV3Plus),
    DeepLabV2(DeepLabV2),
    Dpt(Dpt),
}

impl Network {
    pub fn new(kind: NetworkKind, cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match kind {
            NetworkKind::DeepLabV3Plus => Network::DeepLabV3Plus(DeepLabV3Plus::new(cfg, vb)?),
            NetworkKind::DeepLabV2 => Network::DeepLabV2(DeepLabV2::new(cfg, vb)?),
            NetworkKind::Dpt => Network::Dpt(Dpt::new(cfg, vb)?),
        })
    }

    pub fn kind(&self) -> NetworkKind {
        match self {
            Network::DeepLabV3Plus(_) => NetworkKind::DeepLabV3Plus,
            Network::DeepLabV2(_) => NetworkKind::DeepLabV2,
            Network::Dpt(_) => NetworkKind::Dpt,
        }
    }

    pub fn config(&self) -> &DeepLabConfig {
        match self {
            Network::DeepLabV3Plus(n) => n.config(),
            Network::DeepLabV2(n) => n.config(),
            Network::Dpt(n) => n.config(),
        }
    }

    /// Train-mode forward passes (of the student, and of the teacher's pseudo-labelling
    /// pass) use synchronized batch norm over `sync`'s ranks; `None` turns it off.
    pub fn with_sync_bn(self, sync: Option<SyncBn>) -> Self {
        match self {
            Network::DeepLabV3Plus(n) => Network::DeepLabV3Plus(n.with_sync_bn(sync)),
            Network::DeepLabV2(n) => Network::DeepLabV2(n.with_sync_bn(sync)),
            Network::Dpt(n) => Network::Dpt(n.with_sync_bn(sync)),
        }
    }

    pub fn sync_bn(&self) -> Option<&SyncBn> {
        match self {
            Network::DeepLabV3Plus(n) => n.sync_bn(),
            Network::DeepLabV2(n) => n.sync_bn(),
            Network::Dpt(n) => n.sync_bn(),
        }
    }

    /// Forward passes compute their convolutions in `precision` (see
    /// [`crate::precision`]); the outputs stay in the input's type.
    pub fn with_precision(self, precision: Precision) -> Self {
        match self {
            Network::DeepLabV3Plus(n) => Network::DeepLabV3Plus(n.with_precision(precision)),
            Network::DeepLabV2(n) => Network::DeepLabV2(n.with_precision(precision)),
            Network::Dpt(n) => Network::Dpt(n.with_precision(precision)),
        }
    }

    pub fn precision(&self) -> Precision {
        match self {
            Network::DeepLabV3Plus(n) => n.precision(),
            Network::DeepLabV2(n) => n.precision(),
            Network::Dpt(n) => n.precision(),
        }
    }

    /// The input as this network can take it: DPT needs multiples of the patch size, so
    /// an image of another size is resized bilinearly (align_corners=True) to the nearest
    /// multiples of 14, as UniMatch V2 evaluates; the DeepLabs take any size. For
    /// evaluation and prediction; training crops are multiples already.
    pub fn fit_input(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Network::Dpt(_) => crate::dpt::fit_to_patches(x),
            _ => Ok(x.clone()),
        }
    }

    /// See [`DeepLabV3Plus::forward_t`].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_mode(x, Mode::new(train, true))
    }

    /// See [`DeepLabV3Plus::forward_no_grad`].
    pub fn forward_no_grad(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        crate::layers::forward_without_graph(x, train, |x, mode| self.forward_mode(x, mode))
    }

    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        match self {
            Network::DeepLabV3Plus(n) => n.forward_mode(x, mode),
            Network::DeepLabV2(n) => n.forward_mode(x, mode),
            Network::Dpt(n) => n.forward_mode(x, mode),
        }
    }
}

impl From<DeepLabV3Plus> for Network {
    fn from(n: DeepLabV3Plus) -> Self {
        Network::DeepLabV3Plus(n)
    }
}

impl From<DeepLabV2> for Network {
    fn from(n: DeepLabV2) -> Self {
        Network::DeepLabV2(n)
    }
}

impl From<Dpt> for Network {
    fn from(n: Dpt) -> Self {
        Network::Dpt(n)
    }
}
