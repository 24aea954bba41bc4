"""learn2learn's Prototypical Networks example, on Omniglot, timed: the peer side of issue #15's
ProtoNet time-to-accuracy.

learn2learn's `examples/vision/protonet_miniimagenet.py` (the library's ProtoNet example) with
its settings: `l2l.vision.models.CNN4Backbone` (4 blocks of 64 filters with batch norm and max
pooling), 30-way 1-shot training episodes with 15 queries per class, Adam 0.001 halved every 20
epochs of 100 episodes, and after every epoch a validation on 200 fixed 5-way 1-shot tasks in
`model.eval()` mode. Four changes that do not touch the algorithm:

- the data: Omniglot through learn2learn's own benchmark task sets
  (`l2l.vision.benchmarks.get_tasksets("omniglot")`: 1,100 / 100 / 423 characters for train /
  validation / test, rotations by multiples of 90 degrees, as its MAML Omniglot example), from
  the official zips in `--data`, unpacked into torchvision's layout (md5 check skipped, as in
  `l2l_maml_omniglot.py`), and a 1-channel network;
- 15 validation queries per class, not 30 (an Omniglot character has 20 images; 15 is the
  papers' and our test protocol);
- it stops once an epoch's validation accuracy reaches `--target`, or after `--minutes`;
- it prints one JSON line per epoch: epoch, episodes, elapsed_s (wall time from the first
  episode, validations included), train and validation accuracy.

Usage: PYTHON l2l_protonet_omniglot.py --data DIR/omniglot --work TMPDIR [--threads 2]
       [--minutes 60] [--target 0.97]
"""
import argparse
import json
import random
import time

import l2l_omniglot_common as common
import numpy as np
import torch
import torch.nn.functional as F

ap = argparse.ArgumentParser()
common.add_arguments(ap)
ap.add_argument("--train-way", type=int, default=30)
ap.add_argument("--shot", type=int, default=1)
ap.add_argument("--train-query", type=int, default=15)
ap.add_argument("--test-way", type=int, default=5)
ap.add_argument("--test-shot", type=int, default=1)
ap.add_argument("--test-query", type=int, default=15)
ap.add_argument("--episodes-per-epoch", type=int, default=100)
ap.add_argument("--val-tasks", type=int, default=200)
ap.add_argument("--seed", type=int, default=42)
args = ap.parse_args()
l2l = common.setup(args)


def pairwise_distances_logits(a, b):
    n, m = a.shape[0], b.shape[0]
    return -((a.unsqueeze(1).expand(n, m, -1) - b.unsqueeze(0).expand(n, m, -1)) ** 2).sum(dim=2)


class Convnet(torch.nn.Module):
    def __init__(self, x_dim=1, hid_dim=64):
        super().__init__()
        self.encoder = l2l.vision.models.CNN4Backbone(hidden_size=hid_dim, channels=x_dim, max_pool=True)

    def forward(self, x):
        x = self.encoder(x)
        return x.view(x.size(0), -1)


def fast_adapt(model, batch, ways, shot, query_num):
    data, labels = batch
    # Sort the samples by label, as the example does.
    sort = torch.sort(labels)
    data, labels = data[sort.indices], labels[sort.indices]
    embeddings = model(data)
    support_indices = np.zeros(data.size(0), dtype=bool)
    selection = np.arange(ways) * (shot + query_num)
    for offset in range(shot):
        support_indices[selection + offset] = True
    query_indices = torch.from_numpy(~support_indices)
    support = embeddings[torch.from_numpy(support_indices)].reshape(ways, shot, -1).mean(dim=1)
    query = embeddings[query_indices]
    labels = labels[query_indices].long()
    logits = pairwise_distances_logits(query, support)
    return F.cross_entropy(logits, labels), common.accuracy(logits, labels)


def main():
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    tasksets = l2l.vision.benchmarks.get_tasksets(
        "omniglot",
        train_ways=args.train_way,
        train_samples=args.shot + args.train_query,
        test_ways=args.test_way,
        test_samples=args.test_shot + args.test_query,
        num_tasks=-1,
        root=args.work,
    )
    # 200 fixed validation tasks, as the example's `num_tasks=200`.
    valid = [tasksets.validation.sample() for _ in range(args.val_tasks)]
    print(json.dumps({"setup_s": time.perf_counter() - t0}), flush=True)
    model = Convnet()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    lr_scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=20, gamma=0.5)
    start = time.perf_counter()
    epoch = 0
    while True:
        epoch += 1
        model.train()
        train_acc = 0.0
        for _ in range(args.episodes_per_epoch):
            loss, acc = fast_adapt(model, tasksets.train.sample(), args.train_way, args.shot, args.train_query)
            train_acc += acc.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        lr_scheduler.step()
        model.eval()
        val_acc = 0.0
        with torch.no_grad():
            for batch in valid:
                _, acc = fast_adapt(model, batch, args.test_way, args.test_shot, args.test_query)
                val_acc += acc.item()
        val_acc /= len(valid)
        elapsed = time.perf_counter() - start
        print(
            json.dumps(
                {
                    "epoch": epoch,
                    "episodes": epoch * args.episodes_per_epoch,
                    "elapsed_s": elapsed,
                    "train_accuracy": train_acc / args.episodes_per_epoch,
                    "valid_accuracy": val_acc,
                }
            ),
            flush=True,
        )
        if val_acc >= args.target:
            print(json.dumps({"reached": args.target, "epoch": epoch, "elapsed_s": elapsed}))
            break
        if elapsed > 60.0 * args.minutes:
            print(json.dumps({"not_reached": args.target, "epoch": epoch, "elapsed_s": elapsed}))
            break


main()
