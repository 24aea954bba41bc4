"""learn2learn's own Omniglot MAML example, timed: the peer side of issue #15's time-to-accuracy.

learn2learn 0.2.0's `examples/vision/maml_omniglot.py` as published (its benchmark task sets:
1,100 / 100 / 423 characters for train / validation / test, rotations by multiples of 90 degrees,
5-way 1-shot, one query per class; second-order `l2l.algorithms.MAML`, fast_lr 0.5, Adam 0.003,
meta-batch 32, 1 adaptation step, seed 42; every iteration also adapts on 32 validation tasks),
with three changes that do not touch the algorithm:

- the data: the official zips in `--data` (our `$METALEARN_DATA/omniglot`) are unpacked into
  torchvision's layout, and torchvision's md5 check of the zips is skipped (the zips we hold
  were rebuilt from the official repository's images and differ byte-wise from the ones
  torchvision knows; there is no network to download those);
- `--model cnn` swaps the example's `OmniglotFC` (an MLP) for `l2l.vision.models.OmniglotCNN`
  (4 conv blocks of 64 filters with batch norm, strided, as Finn et al.'s Omniglot network);
- it stops after `--minutes` of training or once the moving average of the meta-validation
  accuracy over the last `--window` iterations reaches `--target`, and prints one JSON line per
  iteration: iteration, elapsed_s (training only, data set-up excluded), meta-train and
  meta-validation accuracy and that moving average.

Usage: PYTHON l2l_maml_omniglot.py --data DIR/omniglot --work TMPDIR [--model fc|cnn]
       [--threads 2] [--minutes 60] [--target 0.97] [--window 25]
"""
import argparse
import json
import random
import time

import l2l_omniglot_common as common
import numpy as np
import torch
from torch import nn, optim

ap = argparse.ArgumentParser()
common.add_arguments(ap)
ap.add_argument("--model", choices=["fc", "cnn"], default="fc")
ap.add_argument("--window", type=int, default=25)
args = ap.parse_args()
l2l = common.setup(args)


def fast_adapt(batch, learner, loss, adaptation_steps, shots, ways):
    data, labels = batch
    adaptation_indices = np.zeros(data.size(0), dtype=bool)
    adaptation_indices[np.arange(shots * ways) * 2] = True
    evaluation_indices = torch.from_numpy(~adaptation_indices)
    adaptation_indices = torch.from_numpy(adaptation_indices)
    adaptation_data, adaptation_labels = data[adaptation_indices], labels[adaptation_indices]
    evaluation_data, evaluation_labels = data[evaluation_indices], labels[evaluation_indices]
    for _ in range(adaptation_steps):
        train_error = loss(learner(adaptation_data), adaptation_labels)
        learner.adapt(train_error)
    predictions = learner(evaluation_data)
    return loss(predictions, evaluation_labels), common.accuracy(predictions, evaluation_labels)


def main(ways=5, shots=1, meta_lr=0.003, fast_lr=0.5, meta_batch_size=32, adaptation_steps=1, seed=42):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    tasksets = l2l.vision.benchmarks.get_tasksets(
        "omniglot",
        train_ways=ways,
        train_samples=2 * shots,
        test_ways=ways,
        test_samples=2 * shots,
        num_tasks=20000,
        root=args.work,
    )
    print(json.dumps({"setup_s": time.perf_counter() - t0, "model": args.model}), flush=True)
    if args.model == "fc":
        model = l2l.vision.models.OmniglotFC(28**2, ways)
    else:
        model = l2l.vision.models.OmniglotCNN(ways)
    maml = l2l.algorithms.MAML(model, lr=fast_lr, first_order=False)
    opt = optim.Adam(maml.parameters(), meta_lr)
    loss = nn.CrossEntropyLoss(reduction="mean")
    recent = []
    start = time.perf_counter()
    iteration = 0
    while True:
        opt.zero_grad()
        train_acc = valid_acc = 0.0
        for _ in range(meta_batch_size):
            learner = maml.clone()
            err, acc = fast_adapt(tasksets.train.sample(), learner, loss, adaptation_steps, shots, ways)
            err.backward()
            train_acc += acc.item()
            learner = maml.clone()
            _, acc = fast_adapt(tasksets.validation.sample(), learner, loss, adaptation_steps, shots, ways)
            valid_acc += acc.item()
        for p in maml.parameters():
            p.grad.data.mul_(1.0 / meta_batch_size)
        opt.step()
        valid_acc /= meta_batch_size
        recent = (recent + [valid_acc])[-args.window:]
        moving = sum(recent) / len(recent)
        elapsed = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "iteration": iteration,
                    "elapsed_s": elapsed,
                    "train_accuracy": train_acc / meta_batch_size,
                    "valid_accuracy": valid_acc,
                    "valid_moving": moving,
                }
            ),
            flush=True,
        )
        iteration += 1
        if len(recent) == args.window and moving >= args.target:
            print(json.dumps({"reached": args.target, "iteration": iteration, "elapsed_s": elapsed}))
            break
        if elapsed > 60.0 * args.minutes:
            print(json.dumps({"not_reached": args.target, "iteration": iteration, "elapsed_s": elapsed}))
            break


main()
