"""The original ReCo DeepLabv3Plus (lorenmt/reco, network/deeplabv3.py) timed like
`trainer bench` and benches/deeplab.rs: median of several runs after a warm-up, each
measurement in a process of its own (peak host RSS, and peak device memory on CUDA).

Measurements (`--only`, comma-separated; default train,eval,semi; also deploy):
  train  train-mode forward+backward of one batch (the network alone)
  eval   eval forward under no_grad, both heads, of the whole batch (benches/deeplab.rs
         does the same), or of one image of --eval-size
  deploy the same with the class head only (eval mode, no representation head): what a
         PyTorch user deploys, beside our folded Segmenter
  semi   the original's semi-supervised step (train_semisup.py) on the VOC setting:
         EMA teacher pseudo-labels (train mode, no_grad), random rescale+crop and ClassMix
         on the device, two student passes, supervised CE, confidence-weighted
         unsupervised CE, the original compute_reco_loss (256 queries, 512 negatives,
         its Python negative-index sampler), SGD (momentum 0.9, nesterov, wd 5e-4), EMA.
         Simplification: no colour jitter/blur (the original runs them through PIL on
         the host), which only makes this baseline faster.

    python crates/models/benches/pytorch_deeplab.py [--device cuda --backbone resnet101 --batch 10 --size 321 --runs 5]

`--network dpt --unimatch PATH` times UniMatch V2's DPT on DINOv2 (its modules from a
LiheYoung/UniMatch-V2 checkout, ReCo's representation head added: `unimatch_dpt.py`)
the same way, as `trainer bench --network dpt`: the semi step with UniMatch V2's AdamW
(lr 5e-6, head 40x, weight decay 0.01), eval with the image resized to the nearest
multiples of 14 and the logits back.

TF32 is off unless --tf32 (as `trainer check`/`trainer bench`; PyTorch's own default
allows it in cuDNN convolutions). Needs torch, torchvision and numpy (a scratch venv or
the GPU machine's environment; never part of CI).
"""
import argparse
import contextlib
import copy
import os
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

try:
    import numpy as np
except ImportError:  # only the semi step's negative sampler needs it
    np = None


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

    def forward(self, x, classes_only=False):
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
        if classes_only:  # what a deployment runs: no representation head
            return self.classifier(joined)
        return self.classifier(joined), self.representation(joined)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def blob_labels(b, h, w, classes, gen):
    """Rectangular blobs, about six classes per image as in VOC crops (like trainer bench)."""
    cells = torch.randint(classes, (b, 3, 3), generator=gen)
    ys = torch.arange(h) * 3 // h
    xs = torch.arange(w) * 3 // w
    return cells[:, ys][:, :, xs]


def label_onehot(inputs, num_segments):
    b, h, w = inputs.shape
    outputs = torch.zeros((num_segments, b, h, w), device=inputs.device)
    inputs_temp = inputs.clone()
    inputs_temp[inputs == -1] = 0
    outputs.scatter_(0, inputs_temp.unsqueeze(0), 1.0)
    outputs[:, inputs == -1] = 0
    return outputs.permute(1, 0, 2, 3)


def compute_supervised_loss(predict, target):
    return F.cross_entropy(predict, target, ignore_index=-1)


def compute_unsupervised_loss(predict, target, logits, strong_threshold):
    batch_size = predict.shape[0]
    valid_mask = (target >= 0).float()
    weighting = logits.view(batch_size, -1).ge(strong_threshold).sum(-1) / valid_mask.view(batch_size, -1).sum(-1)
    loss = F.cross_entropy(predict, target, reduction="none", ignore_index=-1)
    return torch.mean(torch.masked_select(weighting[:, None, None] * loss, loss > 0))


def negative_index_sampler(samp_num, seg_num_list):
    negative_index = []
    for i in range(samp_num.shape[0]):
        for j in range(samp_num.shape[1]):
            negative_index += np.random.randint(low=sum(seg_num_list[:j]), high=sum(seg_num_list[:j + 1]),
                                                size=int(samp_num[i, j])).tolist()
    return negative_index


def compute_reco_loss(rep, label, mask, prob, strong_threshold=1.0, temp=0.5, num_queries=256, num_negatives=256):
    """The original's compute_reco_loss (lorenmt/reco, module_list.py), unchanged."""
    batch_size, num_feat, im_w_, im_h = rep.shape
    num_segments = label.shape[1]
    device = rep.device
    valid_pixel = label * mask
    rep = rep.permute(0, 2, 3, 1)
    seg_feat_all_list, seg_feat_hard_list, seg_num_list, seg_proto_list = [], [], [], []
    for i in range(num_segments):
        valid_pixel_seg = valid_pixel[:, i]
        if valid_pixel_seg.sum() == 0:
            continue
        prob_seg = prob[:, i, :, :]
        rep_mask_hard = (prob_seg < strong_threshold) * valid_pixel_seg.bool()
        seg_proto_list.append(torch.mean(rep[valid_pixel_seg.bool()], dim=0, keepdim=True))
        seg_feat_all_list.append(rep[valid_pixel_seg.bool()])
        seg_feat_hard_list.append(rep[rep_mask_hard])
        seg_num_list.append(int(valid_pixel_seg.sum().item()))
    if len(seg_num_list) <= 1:
        return torch.tensor(0.0, device=device)
    reco_loss = torch.tensor(0.0, device=device)
    seg_proto = torch.cat(seg_proto_list)
    valid_seg = len(seg_num_list)
    seg_len = torch.arange(valid_seg)
    for i in range(valid_seg):
        if len(seg_feat_hard_list[i]) > 0:
            seg_hard_idx = torch.randint(len(seg_feat_hard_list[i]), size=(num_queries,))
            anchor_feat = seg_feat_hard_list[i][seg_hard_idx]
        else:
            continue
        with torch.no_grad():
            seg_mask = torch.cat(([seg_len[i:], seg_len[:i]]))
            proto_sim = torch.cosine_similarity(seg_proto[seg_mask[0]].unsqueeze(0), seg_proto[seg_mask[1:]], dim=1)
            proto_prob = torch.softmax(proto_sim / temp, dim=0)
            negative_dist = torch.distributions.categorical.Categorical(probs=proto_prob)
            samp_class = negative_dist.sample(sample_shape=[num_queries, num_negatives])
            samp_num = torch.stack([(samp_class == c).sum(1) for c in range(len(proto_prob))], dim=1)
            negative_num_list = seg_num_list[i + 1:] + seg_num_list[:i]
            negative_index = negative_index_sampler(samp_num, negative_num_list)
            negative_feat_all = torch.cat(seg_feat_all_list[i + 1:] + seg_feat_all_list[:i])
            negative_feat = negative_feat_all[negative_index].reshape(num_queries, num_negatives, num_feat)
            positive_feat = seg_proto[i].unsqueeze(0).unsqueeze(0).repeat(num_queries, 1, 1)
            all_feat = torch.cat((positive_feat, negative_feat), dim=1)
        seg_logits = torch.cosine_similarity(anchor_feat.unsqueeze(1), all_feat, dim=2)
        reco_loss = reco_loss + F.cross_entropy(seg_logits / temp, torch.zeros(num_queries).long().to(device))
    return reco_loss / valid_seg


def rescale_crop(data, label, logits, crop, scale_range, gen):
    """Random rescale then a random crop back to `crop` (on the device; -1 fills)."""
    b, _, h, w = data.shape
    s = float(torch.empty(1).uniform_(*scale_range, generator=gen))
    sh, sw = max(int(h * s), crop), max(int(w * s), crop)
    data = F.interpolate(data, size=(sh, sw), mode="bilinear", align_corners=True)
    label = F.interpolate(label[:, None].float(), size=(sh, sw), mode="nearest")[:, 0].long()
    logits = F.interpolate(logits[:, None], size=(sh, sw), mode="nearest")[:, 0]
    y = int(torch.randint(sh - crop + 1, (1,), generator=gen))
    x = int(torch.randint(sw - crop + 1, (1,), generator=gen))
    return data[:, :, y:y + crop, x:x + crop], label[:, y:y + crop, x:x + crop], logits[:, y:y + crop, x:x + crop]


def classmix(data, label, logits):
    """The original's generate_unsup_data(mode='classmix'): half the classes of each image
    pasted onto the next one."""
    batch_size = data.shape[0]
    new_data, new_target, new_logits = [], [], []
    for i in range(batch_size):
        classes = torch.unique(label[i])
        classes = classes[classes >= 0]
        chosen = classes[torch.randperm(len(classes), device=classes.device)[:(len(classes) + 1) // 2]]
        mix_mask = (label[i].unsqueeze(-1) == chosen).any(-1).float()
        j = (i + 1) % batch_size
        new_data.append((data[i] * mix_mask + data[j] * (1 - mix_mask)).unsqueeze(0))
        new_target.append((label[i] * mix_mask + label[j] * (1 - mix_mask)).unsqueeze(0))
        new_logits.append((logits[i] * mix_mask + logits[j] * (1 - mix_mask)).unsqueeze(0))
    return torch.cat(new_data), torch.cat(new_target).long(), torch.cat(new_logits)


class EMA:
    def __init__(self, model, alpha):
        self.step = 0
        self.model = copy.deepcopy(model)
        self.alpha = alpha

    def update(self, model):
        decay = min(1 - 1 / (self.step + 1), self.alpha)
        for ema_param, param in zip(self.model.parameters(), model.parameters()):
            ema_param.data = decay * ema_param.data + (1 - decay) * param.data
        self.step += 1


def semi_step(model, ema, optimizer, xl, yl, xu, gen, classes=21, strong=0.97, weak=0.7, temp=0.5,
              num_queries=256, num_negatives=512, amp=contextlib.nullcontext, scaler=None):
    with amp():
        loss = semi_loss(model, ema, xl, yl, xu, gen, classes, strong, weak, temp, num_queries, num_negatives)
    optimizer.zero_grad()
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    ema.update(model)


def semi_loss(model, ema, xl, yl, xu, gen, classes, strong, weak, temp, num_queries, num_negatives):
    pred_l, rep_l = model(xl)
    pred_l_large = F.interpolate(pred_l, size=yl.shape[1:], mode="bilinear", align_corners=True)
    with torch.no_grad():
        pred_u, _ = ema.model(xu)
        pred_u_large_raw = F.interpolate(pred_u, size=xu.shape[2:], mode="bilinear", align_corners=True)
        pseudo_logits, pseudo_labels = torch.max(torch.softmax(pred_u_large_raw, dim=1), dim=1)
        crop = xu.shape[-1]
        xa, ya, la = rescale_crop(xu, pseudo_labels, pseudo_logits, crop, (0.5, 1.5), gen)
        xa, ya, la = classmix(xa, ya, la)
    pred_u, rep_u = model(xa)
    pred_u_large = F.interpolate(pred_u, size=yl.shape[1:], mode="bilinear", align_corners=True)
    rep_all = torch.cat((rep_l, rep_u))
    pred_all = torch.cat((pred_l, pred_u))
    sup_loss = compute_supervised_loss(pred_l_large, yl)
    unsup_loss = compute_unsupervised_loss(pred_u_large, ya, la, strong)
    with torch.no_grad():
        mask_u = la.ge(weak).float()
        mask_all = torch.cat(((yl.unsqueeze(1) >= 0).float(), mask_u.unsqueeze(1)))
        mask_all = F.interpolate(mask_all, size=pred_all.shape[2:], mode="nearest")
        label_l = F.interpolate(label_onehot(yl, classes), size=pred_all.shape[2:], mode="nearest")
        label_u = F.interpolate(label_onehot(ya, classes), size=pred_all.shape[2:], mode="nearest")
        label_all = torch.cat((label_l, label_u))
        prob_all = torch.cat((torch.softmax(pred_l, dim=1), torch.softmax(pred_u, dim=1)))
    reco_loss = compute_reco_loss(rep_all, label_all, mask_all, prob_all, strong, temp, num_queries, num_negatives)
    return sup_loss + unsup_loss + reco_loss


def measure(args, what):
    torch.manual_seed(0)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    if args.network == "dpt":
        # UniMatch V2's DPT with ReCo's head (unimatch_dpt.py), its AdamW recipe below.
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from unimatch_dpt import DptReco

        encoder = {"dinov2-s": "small", "dinov2-b": "base", "dinov2-l": "large"}[args.backbone]
        model = DptReco(args.unimatch, encoder).to(device)
    else:
        model = DeepLabv3Plus(getattr(torchvision.models, args.backbone)()).to(device)
    # --amp: autocast around the forward passes and the losses (PyTorch's recipe: matmuls
    # and convolutions in the low precision, softmax / cross-entropy / batch norm in f32),
    # backward outside it; f16 with a GradScaler.
    amp_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(args.amp)
    amp = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type) if args.amp == "f16" else None
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(device)
    if what == "semi":
        if np is None:
            raise SystemExit("the semi step needs numpy (the original's negative sampler)")
        np.random.seed(0)
        model.train()
        ema = EMA(model, 0.99)
        if args.network == "dpt":
            lr = 5e-6
            head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
            optimizer = torch.optim.AdamW(
                [{"params": list(model.backbone.parameters()), "lr": lr}, {"params": head, "lr": 40 * lr}],
                lr=lr, betas=(0.9, 0.999), weight_decay=0.01)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=2.5e-3, weight_decay=5e-4, momentum=0.9,
                                        nesterov=True)
        yl = blob_labels(args.batch, args.size, args.size, 21, gen).to(device)
        xu = torch.randn(args.batch, 3, args.size, args.size, generator=gen).to(device)
    times = []
    for i in range(args.runs + 1):
        sync(device)
        t = time.perf_counter()
        if what == "train":
            model.train()
            model.zero_grad(set_to_none=True)
            with amp():
                p, r = model(x)
                loss = p.float().mean() + r.float().mean()
            loss.backward()
        elif what == "semi":
            semi_step(model, ema, optimizer, x, yl, xu, gen, amp=amp, scaler=scaler)
        elif args.network == "dpt":
            # As `trainer bench` evaluates DPT: resized to the nearest multiples of 14
            # (UniMatch V2's evaluate), the logits back to the image, argmax.
            model.eval()
            with torch.no_grad(), amp():
                img = x if args.eval_size is None else torch.zeros(1, 3, args.eval_size, args.eval_size,
                                                                 device=device)
                h, w = img.shape[-2:]
                fit = F.interpolate(img, (int(h / 14 + 0.5) * 14, int(w / 14 + 0.5) * 14), mode="bilinear",
                                    align_corners=True)
                pred, _ = model(fit)
                F.interpolate(pred, (h, w), mode="bilinear", align_corners=True).argmax(1)
        else:
            # The whole batch, as benches/deeplab.rs evaluates (or one image of
            # --eval-size, as `trainer bench`); "deploy": the class head only.
            model.eval()
            with torch.no_grad(), amp():
                img = x if args.eval_size is None else torch.zeros(1, 3, args.eval_size, args.eval_size,
                                                                 device=device)
                model(img, classes_only=True) if what == "deploy" else model(img)
        sync(device)
        if i > 0:
            times.append(time.perf_counter() - t)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dev_mb = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return statistics.median(times), min(times), peak_mb, dev_mb, nominal_flops(args, what, model, x)


def nominal_flops(args, what, model, x):
    """FLOPs of one measured iteration as torch.utils.flop_counter.FlopCounterMode counts
    them (convolutions and matmuls, 2 per multiply-add; each gradient as much again), for
    the GFLOP/s columns of benches/deeplab.rs. Counted in an extra, untimed iteration;
    NaN for the semi step and for DPT (not compared there)."""
    if what not in ("train", "eval", "deploy") or args.network == "dpt" or args.eval_size is not None:
        return float("nan")
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    if what == "train":
        model.train()
        model.zero_grad(set_to_none=True)
        with counter:
            p, r = model(x)
            (p.float().mean() + r.float().mean()).backward()
    else:
        model.eval()
        with torch.no_grad(), counter:
            model(x, classes_only=True) if what == "deploy" else model(x)
    return float(counter.get_total_flops())


LABELS = {
    "train": "train fwd+bwd (network alone, batch stats)",
    "eval": "eval forward (no_grad), both heads",
    "deploy": "eval forward (no_grad), class head only (what a PyTorch user deploys)",
    "semi": "semi-supervised step (teacher, ClassMix, 2 student passes, 3 losses, SGD, EMA)",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--network", choices=["deeplabv3p", "dpt"], default="deeplabv3p")
    ap.add_argument("--unimatch", default=None, help="a LiheYoung/UniMatch-V2 checkout (for --network dpt)")
    ap.add_argument("--backbone", default=None, help="default resnet101, or dinov2-s with --network dpt")
    ap.add_argument("--batch", type=int, default=2, help="crops per batch (semi: labelled = unlabelled)")
    ap.add_argument("--size", type=int, default=321)
    ap.add_argument("--eval-size", type=int, default=None, help="eval on one image of this size (default: one crop)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in matmuls and cuDNN convolutions")
    ap.add_argument("--amp", choices=["off", "bf16", "f16"], default="off",
                    help="autocast the forward passes and losses to bf16 or f16 (f16 with a GradScaler)")
    ap.add_argument("--only", default="train,eval,semi")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's, one per physical core)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.backbone is None:
        args.backbone = "dinov2-s" if args.network == "dpt" else "resnet101"
    if args.network == "dpt" and not args.unimatch:
        raise SystemExit("--network dpt needs --unimatch PATH (a LiheYoung/UniMatch-V2 checkout)")
    whats = [w for w in args.only.split(",") if w]
    for w in whats:
        if w not in LABELS:
            raise SystemExit(f"unknown measurement {w!r} in --only: expected train, eval, deploy or semi")
    if args.network == "dpt" and "deploy" in whats:
        raise SystemExit("--only deploy is for the DeepLab (DPT's heads share nothing to skip here)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.child:
        print(*measure(args, whats[0]))
        return
    dev = torch.device(args.device)
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    name = "UniMatch V2 DPT (+ ReCo head), AdamW" if args.network == "dpt" else "DeepLabv3Plus OS16"
    print(f"PyTorch {torch.__version__} eager {name} {args.backbone} on {args.device} ({where}), "
          f"batch {args.batch}, {args.size}x{args.size}, "
          f"{'f32' if args.amp == 'off' else 'autocast ' + args.amp}, TF32 {'on' if args.tf32 else 'off'} "
          f"(both torch.backends switches set to {args.tf32}; this torch's defaults: "
          f"cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}, "
          f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}), "
          f"median of {args.runs} runs")
    print("| measurement | median (ms) | min (ms) | images/s | peak host RSS (MB) | peak device (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for what in whats:
        cmd = [sys.executable, __file__, "--child", "--device", args.device, "--backbone", args.backbone,
               "--network", args.network] + (["--unimatch", args.unimatch] if args.unimatch else []) + [
               "--batch", str(args.batch), "--size", str(args.size), "--runs", str(args.runs), "--only", what]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        if args.eval_size is not None:
            cmd += ["--eval-size", str(args.eval_size)]
        if args.tf32:
            cmd.append("--tf32")
        cmd += ["--amp", args.amp]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"| {LABELS[what]} | FAILED: {res.stderr.strip().splitlines()[-1:]} | | | | |")
            continue
        med, mn, mb, dmb, _ = map(float, res.stdout.split()[-5:])
        eval_images = args.batch if args.eval_size is None else 1
        images = {"train": args.batch, "eval": eval_images, "deploy": eval_images, "semi": 2 * args.batch}[what]
        print(f"| {LABELS[what]} | {1e3 * med:.1f} | {1e3 * mn:.1f} | {images / med:.2f} | {mb:.0f} | {dmb:.0f} |")


if __name__ == "__main__":
    main()
