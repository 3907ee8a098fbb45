"""A recipe that trains with the Hugging Face Trainer: a small Vision Transformer, from scratch.

The model is built from a ``ViTConfig`` (Dosovitskiy et al. 2021, arXiv:2010.11929): no
weights are downloaded. Each 8x8 digit is four 4x4 patches, each a token.

Three things make a Trainer script a fairtrial recipe: ``training_args(ctx, ...)`` (the
trial's seeds, its work folder, no reporting), ``FairtrialCallback(ctx)`` in the Trainer's
callbacks (metrics, phases, FLOPs, and the check of the seeds), and ``ctx.evaluate_test`` at
the end (fairtrial scores the sealed test split; the recipe never sees its labels).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: the model is built here

import numpy as np
import torch
from transformers import (
    PrinterCallback,
    Trainer,
    ViTConfig,
    ViTForImageClassification,
    set_seed,
)

from fairtrial.integrations import hf


def pixels(x):
    """Rows of 64 pixels in [0, 1] -> one-channel 8x8 images."""
    return torch.tensor(np.asarray(x, dtype=np.float32).reshape(-1, 1, 8, 8))


class Digits(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = pixels(x), torch.tensor(np.asarray(y, dtype=np.int64))

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def accuracy(prediction):
    return {"accuracy": float(np.mean(prediction.predictions.argmax(-1) == prediction.label_ids))}


def train(config, ctx):
    args = hf.training_args(
        ctx,
        num_train_epochs=config["epochs"],
        learning_rate=config["lr"],
        warmup_steps=10,
        per_device_train_batch_size=config["batch_size"],
        per_device_eval_batch_size=512,
        label_smoothing_factor=config["label_smoothing"],
        eval_strategy="epoch",
        logging_steps=10,
        use_cpu=True,
    )
    set_seed(args.seed)  # the initial weights come from the trial's seed, the same in every arm
    model = ViTForImageClassification(
        ViTConfig(
            image_size=8,
            patch_size=4,
            num_channels=1,
            hidden_size=config["hidden"],
            num_hidden_layers=config["layers"],
            num_attention_heads=4,
            intermediate_size=2 * config["hidden"],
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            num_labels=10,
        )
    )
    d = ctx.data
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Digits(d.x_train, d.y_train),
        eval_dataset=Digits(d.x_val, d.y_val),
        compute_metrics=accuracy,
        callbacks=[hf.FairtrialCallback(ctx)],
    )
    trainer.remove_callback(PrinterCallback)  # the Trainer would print every log on stdout
    trainer.train()

    def predict(x):
        model.eval()
        with torch.no_grad():
            return model(pixel_values=pixels(x)).logits.argmax(-1).numpy()

    with ctx.phase("eval"):
        ctx.evaluate_test(predict)
