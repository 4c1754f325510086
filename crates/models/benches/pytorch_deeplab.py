"""The original ReCo DeepLabv3Plus (lorenmt/reco, network/deeplabv3.py) timed like
benches/deeplab.rs: a train-mode forward+backward and an eval forward under no_grad,
median of several runs after a warm-up, peak RSS of each in a process of its own.

    python crates/models/benches/pytorch_deeplab.py [--backbone resnet101 --batch 2 --size 321 --runs 5]

Needs torch and torchvision (a scratch venv; never part of CI).
"""
import argparse
import resource
import statistics
import subprocess
import sys
import time
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class ASPPConv(nn.Sequential):
    def __init__(self, in_channels, out_channels, dilation):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Sequential):
    def __init__(self, in_channels, out_channels):
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        size = x.shape[-2:]
        x = super().forward(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    def __init__(self, in_channels, atrous_rates):
        super().__init__()
        out_channels = 256
        modules = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                 nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))]
        for rate in atrous_rates:
            modules.append(ASPPConv(in_channels, out_channels, rate))
        modules.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(modules)
        self.project = nn.Sequential(nn.Conv2d(5 * out_channels, out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabv3Plus(nn.Module):
    def __init__(self, orig_resnet, dilate_scale=16, num_classes=21, output_dim=256):
        super().__init__()
        if dilate_scale == 8:
            orig_resnet.layer3.apply(partial(self._nostride_dilate, dilate=2))
            orig_resnet.layer4.apply(partial(self._nostride_dilate, dilate=4))
            aspp_dilate = [12, 24, 36]
        else:
            orig_resnet.layer4.apply(partial(self._nostride_dilate, dilate=2))
            aspp_dilate = [6, 12, 18]
        self.resnet_conv1 = orig_resnet.conv1
        self.resnet_bn1 = orig_resnet.bn1
        self.resnet_relu1 = orig_resnet.relu
        self.resnet_maxpool = orig_resnet.maxpool
        self.resnet_layer1 = orig_resnet.layer1
        self.resnet_layer2 = orig_resnet.layer2
        self.resnet_layer3 = orig_resnet.layer3
        self.resnet_layer4 = orig_resnet.layer4
        self.ASPP = ASPP(2048, aspp_dilate)
        self.project = nn.Sequential(nn.Conv2d(256, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Conv2d(304, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                        nn.ReLU(inplace=True), nn.Conv2d(256, num_classes, 1))
        self.representation = nn.Sequential(nn.Conv2d(304, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                                            nn.ReLU(inplace=True), nn.Conv2d(256, output_dim, 1))

    @staticmethod
    def _nostride_dilate(m, dilate):
        if m.__class__.__name__.find("Conv") != -1:
            if m.stride == (2, 2):
                m.stride = (1, 1)
                if m.kernel_size == (3, 3):
                    m.dilation = (dilate // 2, dilate // 2)
                    m.padding = (dilate // 2, dilate // 2)
            elif m.kernel_size == (3, 3):
                m.dilation = (dilate, dilate)
                m.padding = (dilate, dilate)

    def forward(self, x):
        x = self.resnet_relu1(self.resnet_bn1(self.resnet_conv1(x)))
        x = self.resnet_maxpool(x)
        x_low = self.resnet_layer1(x)
        x = self.resnet_layer2(x_low)
        x = self.resnet_layer3(x)
        x = self.resnet_layer4(x)
        feature = self.ASPP(x)
        x_low = self.project(x_low)
        output_feature = F.interpolate(feature, size=x_low.shape[2:], mode="bilinear", align_corners=True)
        joined = torch.cat([x_low, output_feature], dim=1)
        return self.classifier(joined), self.representation(joined)


def measure(args, what):
    torch.manual_seed(0)
    model = DeepLabv3Plus(getattr(torchvision.models, args.backbone)())
    x = torch.randn(args.batch, 3, args.size, args.size)
    times = []
    for i in range(args.runs + 1):
        t = time.perf_counter()
        if what == "train":
            model.train()
            model.zero_grad(set_to_none=True)
            p, r = model(x)
            (p.mean() + r.mean()).backward()
        else:
            model.eval()
            with torch.no_grad():
                model(x)
        if i > 0:
            times.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return statistics.median(times), min(times), peak_mb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=321)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only")
    args = ap.parse_args()
    if args.only:
        print(*measure(args, args.only))
        return
    print(f"PyTorch {torch.__version__} DeepLabv3Plus {args.backbone} OS16, batch {args.batch}, "
          f"{args.size}x{args.size}, f32, CPU, {torch.get_num_threads()} threads, median of {args.runs} runs")
    print("| measurement | median (s) | min (s) | peak RSS (MB) |")
    print("| --- | --- | --- | --- |")
    for what, label in [("train", "train step (fwd+bwd, batch stats)"), ("eval", "eval forward (no_grad)")]:
        out = subprocess.run([sys.executable, __file__, "--backbone", args.backbone, "--batch", str(args.batch),
                              "--size", str(args.size), "--runs", str(args.runs), "--only", what],
                             check=True, capture_output=True, text=True).stdout.split()
        med, mn, mb = map(float, out)
        print(f"| {label} | {med:.3f} | {mn:.3f} | {mb:.0f} |")


if __name__ == "__main__":
    main()
