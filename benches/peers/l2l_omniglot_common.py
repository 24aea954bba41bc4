"""What the learn2learn Omniglot timing scripts share (`l2l_maml_omniglot.py`,
`l2l_protonet_omniglot.py`): the threads, the data, and the accuracy they report.

`setup(args)` sets torch's threads (`args.threads`, one inter-op thread), unpacks the official
zips in `args.data` into torchvision's layout under `args.work` (once), and skips torchvision's
md5 check of the zips (the zips we hold were rebuilt from the official repository's images and
differ byte-wise from the ones torchvision knows; there is no network to download those).
It returns the `learn2learn` module, imported after the threads are set.
"""
import os
import zipfile

import torch


def add_arguments(ap):
    """The arguments every script takes."""
    ap.add_argument("--data", required=True, help="folder with images_background.zip, images_evaluation.zip")
    ap.add_argument("--work", required=True, help="scratch folder for the unpacked images")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--target", type=float, default=0.97)


def setup(args):
    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import torchvision.datasets

    import learn2learn as l2l

    root = os.path.join(args.work, "omniglot-py")
    for name in ("images_background", "images_evaluation"):
        if not os.path.isdir(os.path.join(root, name)):
            os.makedirs(root, exist_ok=True)
            with zipfile.ZipFile(os.path.join(args.data, name + ".zip")) as z:
                z.extractall(root)
    torchvision.datasets.Omniglot._check_integrity = lambda self: True
    return l2l


def accuracy(predictions, targets):
    predictions = predictions.argmax(dim=1).view(targets.shape)
    return (predictions == targets).sum().float() / targets.size(0)
