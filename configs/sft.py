# Supervised fine-tuning on data/jinyong's SFT bins (run python prepare_sft.py first), starting from the model
# that configs/pretrain.py wrote. Loss on the assistant's replies only. Writes out/sft/.
# Examples are packed whole into rows of block_size tokens, so batch_size counts rows, not examples: a row of
# 256 tokens holds about 5 of the default data's examples (47 tokens at the median, 141 at most).
from configurator import hardware_profile

task = "sft"
dataset = "jinyong"
init_from = "out/pretrain/latest"  # the most trained model: for a knowledge model, memorising the corpus is the point
out_dir = "out/sft"
profile = hardware_profile()

if profile == "gpu":
    block_size, batch_size = 512, 8
    dropout = attn_dropout = 0.1
    learning_rate, min_lr, warmup_iters = 1e-3, 1e-4, 30
    max_iters, epochs, max_seconds = 0, 2.8, 300.0   # passes over the SFT examples (unmeasured with the fifteen wordings)
    eval_interval, eval_iters = 50, 20
elif profile == "cpu":    # 15-18 minutes on a 2-core CPU where bf16 is fast; a fixed budget
    block_size, batch_size = 256, 4   # about 20 examples a step
    # none on the attention weights, so SDPA keeps its fused kernel: SFT 10% faster with bf16 (3% in float32),
    # answers as good at equal passes over three seeds; the time goes to more passes below (BENCHMARKS.md)
    dropout, attn_dropout = 0.1, 0.0
    # decaying to a hundredth instead of a tenth: seen 0.558 against 0.540, three seeds (BENCHMARKS.md)
    learning_rate, min_lr, warmup_iters = 2e-3, 2e-5, 30
    # the first tokens of a reply decide which memorised answer follows: weighing the first four of every reply
    # four times teaches the model to read the question (key-fact accuracy 0.464 against 0.419, three seeds)
    reply_start_tokens, reply_start_weight = 4, 4.0
    # 3.8 passes over the examples (about 3,660 steps): prepare_sft.py writes the SFT set's records twice beside
    # sft_wordings.jsonl's once: each answer, asked about 17 ways, is trained about 80 times. Against 2.9 passes:
    # key-fact 0.504 against 0.492, in-domain refusals 2.1% against 3.0%, for 29% more SFT time (BENCHMARKS.md)
    max_iters, epochs, max_seconds = 0, 3.8, 0.0
    eval_interval, eval_iters = 100, 10
else:
    block_size, batch_size = 128, 2
    learning_rate, warmup_iters = 1e-3, 2
    max_iters, max_seconds = 20, 0.0
    eval_interval, eval_iters = 10, 2
