"""Apply the runtime patches of scripts/compare-original.sh to a COPY of the original ReCo.

    python patch_original.py SCRATCH_COPY

Every patch is an exact-text replacement that must match its anchor exactly `count`
times; if the original has changed, this stops with a message naming the file and the
patch. Settings come from environment variables read by the patched code at run time
(CMP_DATA_ROOT, CMP_SPLIT, CMP_CROP, CMP_BATCH, CMP_ITERS, CMP_EPOCH_ITERS, CMP_RESNET,
CMP_THREADS, CMP_LOG, CMP_SAVE). The list below is printed by --list and by the script.
"""
import os
import sys

# (file, one-line reason, anchor, replacement, expected count)
PATCHES = [
    ("build_data.py",
     "pandas is imported but never used (and not installed here)",
     "import pandas as pd\n",
     "", 1),
    # --- build_data.py: data root, crop, batch, split, epoch length, torchvision API ---
    ("build_data.py",
     "data root: read the synthetic VOC-layout folder instead of dataset/pascal",
     "self.data_path = 'dataset/pascal'",
     "self.data_path = os.environ['CMP_DATA_ROOT']", 1),
    ("build_data.py",
     "crop: the comparison's crop size instead of 321",
     "self.im_size = [513, 513]\n            self.crop_size = [321, 321]",
     "self.im_size = [513, 513]\n            self.crop_size = [int(os.environ['CMP_CROP'])] * 2", 1),
    ("build_data.py",
     "batch: the comparison's batch size (labelled = unlabelled) instead of 10",
     "            self.batch_size = 10\n",
     "            self.batch_size = int(os.environ['CMP_BATCH'])\n", 1),
    ("build_data.py",
     "labelled split: the ids of `trainer split` (the original's sampler loops forever "
     "when one of its 21 classes never occurs)",
     "        idx_list = f.read().splitlines()\n\n    if train:\n        labeled_idx = []\n",
     "        idx_list = f.read().splitlines()\n\n"
     "    if train and os.environ.get('CMP_SPLIT'):  # compare-original: the split of `trainer split`\n"
     "        import json\n"
     "        with open(os.environ['CMP_SPLIT']) as f:\n"
     "            s = json.load(f)\n"
     "        return s['labelled'], [idx for idx in idx_list if idx not in s['labelled']]\n"
     "    if train:\n        labeled_idx = []\n", 1),
    ("build_data.py",
     "iterations: an epoch of CMP_EPOCH_ITERS steps instead of 200 (the sampler draws "
     "batch x epoch images per epoch)",
     "num_samples = self.batch_size * 200",
     "num_samples = self.batch_size * int(os.environ['CMP_EPOCH_ITERS'])", 1),
    ("build_data.py",
     "torchvision >= 0.11: ColorJitter.get_params returns parameters, not a transform; "
     "use the transform the original's own comment gives (same ranges, same sampling)",
     "color_transform = transforms.ColorJitter.get_params((0.75, 1.25), (0.75, 1.25), (0.75, 1.25), (-0.25, 0.25))",
     "color_transform = transforms.ColorJitter((0.75, 1.25), (0.75, 1.25), (0.75, 1.25), (-0.25, 0.25))", 1),
    # --- network: channel counts of the backbone (identity for ResNet-50/101/152) ---
    ("network/deeplabv3/deeplabv3.py",
     "backbone: ASPP input channels from the ResNet (2048 hard-coded; 512 for ResNet-18/34, as ours)",
     "self.ASPP = ASPP(2048, aspp_dilate)",
     "self.ASPP = ASPP(orig_resnet.fc.in_features, aspp_dilate)", 1),
    ("network/deeplabv3/deeplabv3.py",
     "backbone: low-level (layer1) channels from the ResNet (256 hard-coded; 64 for ResNet-18/34, as ours)",
     "nn.Conv2d(256, 48, 1, bias=False)",
     "nn.Conv2d(orig_resnet.fc.in_features // 8, 48, 1, bias=False)", 1),
    # --- train_semisup.py ---
    ("train_semisup.py",
     "CPU: the torch threads of this machine (the device below is forced to the CPU)",
     "args = parser.parse_args()\n",
     "args = parser.parse_args()\n"
     "import json, math, time  # compare-original\n"
     "torch.set_num_threads(int(os.environ.get('CMP_THREADS', '2')))\n", 1),
    ("train_semisup.py",
     "CPU: never CUDA, even where a GPU is visible",
     'device = torch.device("cuda:{:d}".format(args.gpu) if torch.cuda.is_available() else "cpu")',
     'device = torch.device("cpu")', 1),
    ("train_semisup.py",
     "no hub download: random initialisation (weights=None), backbone depth CMP_RESNET",
     "DeepLabv3Plus(models.resnet101(pretrained=True),",
     "DeepLabv3Plus(getattr(models, os.environ['CMP_RESNET'])(weights=None),", 1),
    ("train_semisup.py",
     "iterations: CMP_ITERS / CMP_EPOCH_ITERS epochs instead of 200 (PolyLR over those epochs)",
     "total_epoch = 200\n",
     "total_epoch = int(os.environ['CMP_ITERS']) // int(os.environ['CMP_EPOCH_ITERS'])\n"
     "cmp_log = open(os.environ['CMP_LOG'], 'w')\n"
     "cmp_t0 = time.time()\n", 1),
    ("train_semisup.py",
     "Python 3 / torch >= 1.13: DataLoader iterators have no .next()",
     "train_l_data, train_l_label = train_l_dataset.next()",
     "train_l_data, train_l_label = next(train_l_dataset)", 1),
    ("train_semisup.py",
     "Python 3 / torch >= 1.13: DataLoader iterators have no .next()",
     "train_u_data, train_u_label = train_u_dataset.next()",
     "train_u_data, train_u_label = next(train_u_dataset)", 1),
    ("train_semisup.py",
     "log: the loss terms and learning rate of every step as JSON lines (CMP_LOG)",
     "        cost[2] = reco_loss.item()\n",
     "        cost[2] = reco_loss.item()\n"
     "        cmp_log.write(json.dumps({'step': iteration + 1, 'sup': cost[0], 'unsup': cost[1], "
     "'reco': cost[2], 'loss': float(loss.item()), 'lr': optimizer.param_groups[0]['lr'], "
     "'secs': time.time() - cmp_t0}) + '\\n')\n"
     "        cmp_log.flush()\n", 1),
    ("train_semisup.py",
     "no per-epoch evaluation (both teachers are evaluated afterwards by one evaluator, ours)",
     "    with torch.no_grad():\n        ema.model.eval()\n        test_dataset = iter(test_loader)\n",
     "    if False:  # compare-original: evaluation by `trainer eval` afterwards\n"
     "        test_dataset = iter(test_loader)\n", 1),
    ("train_semisup.py",
     "save: the final EMA teacher's state_dict (torch.save, zip format) to CMP_SAVE, "
     "instead of the best-by-validation one into model_weights/, no logging/*.npy",
     "    if avg_cost[index][8] >= avg_cost[:, 8].max():\n",
     "    continue  # compare-original: nothing below runs\n"
     "    if avg_cost[index][8] >= avg_cost[:, 8].max():\n", 1),
]

APPEND = ("train_semisup.py",
          "save: after the last epoch, the teacher's state_dict",
          "\n# compare-original: the final mean teacher\n"
          "cmp_log.close()\n"
          "torch.save(ema.model.state_dict(), os.environ['CMP_SAVE'])\n"
          "print('saved the teacher to', os.environ['CMP_SAVE'])\n")


def listing():
    lines = [f"{f}: {why}" for f, why, *_ in PATCHES]
    lines.append(f"{APPEND[0]}: {APPEND[1]}")
    return lines


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--list":
        print("\n".join(listing()))
        return
    if len(sys.argv) != 2:
        sys.exit("usage: patch_original.py SCRATCH_COPY | --list")
    root = sys.argv[1]
    texts = {}
    for f, why, old, new, count in PATCHES:
        path = os.path.join(root, f)
        if f not in texts:
            if not os.path.exists(path):
                sys.exit(f"patch_original: {path} is missing (the original changed?)")
            with open(path) as fh:
                texts[f] = fh.read()
        found = texts[f].count(old)
        if found != count:
            sys.exit(f"patch_original: anchor not found as expected in {f} "
                     f"({found} matches, want {count}) for the patch '{why}':\n{old}\n"
                     "The original changed; update scripts/compare_original/patch_original.py.")
        texts[f] = texts[f].replace(old, new)
    texts[APPEND[0]] += APPEND[2]
    for f, text in texts.items():
        with open(os.path.join(root, f), "w") as fh:
            fh.write(text)
    print(f"patched {len(PATCHES) + 1} places in {', '.join(sorted(texts))}")


if __name__ == "__main__":
    main()
