# Supervised fine-tuning on data/jinyong's SFT bins (run python prepare_sft.py first), starting from the model
# that configs/pretrain.py wrote. Loss on the assistant's replies only. Writes out/sft/.
from configurator import hardware_profile

task = "sft"
dataset = "jinyong"
init_from = "out/pretrain/latest"  # the most trained model: for a knowledge model, memorising the corpus is the point
out_dir = "out/sft"
profile = hardware_profile()

if profile == "gpu":
    block_size, batch_size = 512, 32
    dropout = 0.1
    learning_rate, min_lr, warmup_iters = 3e-4, 3e-5, 50
    max_iters, max_seconds = 2000, 300.0
    eval_interval, eval_iters = 100, 20
elif profile == "cpu":    # about 5 minutes on a 2-core CPU; fixed steps, as in pretraining
    block_size, batch_size = 512, 16
    dropout = 0.1         # regularises towards reworded questions; within run-to-run noise here (BENCHMARKS.md)
    learning_rate, min_lr, warmup_iters = 2e-3, 2e-4, 30
    max_iters, max_seconds = 1250, 0.0
    eval_interval, eval_iters = 100, 10
else:
    block_size, batch_size = 128, 4
    learning_rate, warmup_iters = 1e-3, 2
    max_iters, max_seconds = 20, 0.0
    eval_interval, eval_iters = 10, 2
