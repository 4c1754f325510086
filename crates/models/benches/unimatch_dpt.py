"""UniMatch V2's DPT on DINOv2 (its own modules, from a LiheYoung/UniMatch-V2 checkout)
with ReCo's representation head on the last fused features, returning
`(prediction, representation)` at 8x the patch grid as `reco_models::Dpt` does.

Used by `make_dpt_fixture.py` (the parity fixture) and `pytorch_deeplab.py --network dpt`
(the same-work benchmark). UniMatch V2's `DPTHead.forward` returns only the classifier's
output, so `forward` below repeats it up to `path_1` and applies both heads there.
"""

import sys

import torch.nn as nn

LAYOUT = {
    # encoder: (features, out_channels, intermediate layers), as UniMatch V2's configs
    "small": (64, [48, 96, 192, 384], [2, 5, 8, 11]),
    "base": (128, [96, 192, 384, 768], [2, 5, 8, 11]),
    "large": (256, [256, 512, 1024, 1024], [4, 11, 17, 23]),
}


class DptReco(nn.Module):
    def __init__(self, unimatch_path, encoder="small", num_classes=21, output_dim=256):
        super().__init__()
        if unimatch_path not in sys.path:
            sys.path.insert(0, unimatch_path)
        from model.semseg.dpt import DPT

        features, out_channels, self.layers = LAYOUT[encoder]
        dpt = DPT(encoder_size=encoder, nclass=num_classes, features=features, out_channels=out_channels)
        self.backbone = dpt.backbone
        self.head = dpt.head
        self.representation = nn.Sequential(
            nn.Conv2d(features, features, kernel_size=3, stride=1, padding=1),
            nn.ReLU(True),
            nn.Conv2d(features, output_dim, kernel_size=1, stride=1, padding=0),
        )

    def forward(self, x, keep=None):
        patch_h, patch_w = x.shape[-2] // 14, x.shape[-1] // 14
        out_features = self.backbone.get_intermediate_layers(x, self.layers)
        if keep is not None:
            keep["features"] = [
                f.permute(0, 2, 1).reshape(f.shape[0], f.shape[-1], patch_h, patch_w)
                for f in out_features
            ]
        # DPTHead.forward of model/semseg/dpt.py, up to path_1.
        head = self.head
        out = []
        for i, x in enumerate(out_features):
            x = x.permute(0, 2, 1).reshape((x.shape[0], x.shape[-1], patch_h, patch_w))
            x = head.projects[i](x)
            x = head.resize_layers[i](x)
            out.append(x)
        layer_1, layer_2, layer_3, layer_4 = out
        layer_1_rn = head.scratch.layer1_rn(layer_1)
        layer_2_rn = head.scratch.layer2_rn(layer_2)
        layer_3_rn = head.scratch.layer3_rn(layer_3)
        layer_4_rn = head.scratch.layer4_rn(layer_4)
        path_4 = head.scratch.refinenet4(layer_4_rn, size=layer_3_rn.shape[2:])
        path_3 = head.scratch.refinenet3(path_4, layer_3_rn, size=layer_2_rn.shape[2:])
        path_2 = head.scratch.refinenet2(path_3, layer_2_rn, size=layer_1_rn.shape[2:])
        path_1 = head.scratch.refinenet1(path_2, layer_1_rn)
        return head.scratch.output_conv(path_1), self.representation(path_1)
