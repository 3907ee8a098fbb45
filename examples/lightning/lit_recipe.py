"""A recipe that trains with PyTorch Lightning: a LightningModule and its Trainer.

Three lines make a Lightning script a fairtrial recipe: ``seed_everything(ctx)`` before the
model is built (the trial's seed, not a constant), ``FairtrialCallback(ctx)`` in the Trainer's
callbacks (metrics, phases, FLOPs, and the check of the seed), and ``ctx.evaluate_test`` at the
end (fairtrial scores the sealed test split; the recipe never sees its labels).
"""

import logging

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fairtrial.integrations import lightning as ftl

# Lightning's notes at every Trainer ("GPU available: False", ...): one per trial is noise
logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


class DigitsMLP(L.LightningModule):
    def __init__(self, hidden, dropout, lr):
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def tensors(x, y=None):
    x = torch.tensor(np.asarray(x, dtype=np.float32))
    return x if y is None else (x, torch.tensor(np.asarray(y, dtype=np.int64)))


def train(config, ctx):
    ftl.seed_everything(ctx)  # the trial's "init" stream: weights differ by seed, not by arm
    d = ctx.data
    model = DigitsMLP(config["hidden"], config["dropout"], config["lr"])
    # the batch order comes from the trial's "data" stream: the same for every arm of a seed;
    # equal batches (drop_last) make the FLOPs counted on one step exact
    train_loader = DataLoader(
        TensorDataset(*tensors(d.x_train, d.y_train)),
        batch_size=config["batch_size"],
        shuffle=True,
        drop_last=True,
        generator=ctx.torch_generator("data"),
    )
    val_loader = DataLoader(TensorDataset(*tensors(d.x_val, d.y_val)), batch_size=512)
    trainer = L.Trainer(
        max_epochs=config["epochs"],
        accelerator="cpu",
        devices=1,
        callbacks=[ftl.FairtrialCallback(ctx)],
        # fairtrial keeps the metrics and the work folder: no logger, checkpoints or bars
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=5,
        default_root_dir=ctx.workdir,
    )
    trainer.fit(model, train_loader, val_loader)

    def predict(x):
        model.eval()
        with torch.no_grad():
            return model(tensors(x)).argmax(1).numpy()

    with ctx.phase("eval"):
        ctx.evaluate_test(predict)
