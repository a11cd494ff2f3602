"""Run by test_distributed_and_cli: a tiny pretraining that sleeps after each step so it can be killed."""

import sys
import time

from helpers import tiny_config

from sigcell.train import Trainer

out, resume = sys.argv[1], sys.argv[2] == "resume"
delay = 0.0 if resume else 0.3
trainer = Trainer(tiny_config(out, steps=10, ckpt_every=3, val_every=0), resume=resume,
                  callbacks=(lambda t, step, m: time.sleep(delay),))
print(trainer.fit().status, flush=True)
