# Pretraining on your own novels, without Q&A: configs/pretrain.py's recipe, with what learns the most in a CPU's
# first minutes.
#   python prepare.py --dataset mybooks --input novels/ --tokenizer chars   # one token per Chinese character
#   python train.py config/novels.py --dataset=mybooks                      # writes out/novels/
# Then SFT on your own pairs: python train.py config/sft.py --dataset=mybooks --init_from=out/novels/latest
import os

with open(os.path.join(os.path.dirname(__file__), "pretrain.py"), encoding="utf-8") as _f:
    exec(_f.read())       # every profile of configs/pretrain.py; on a GPU its budget sized to the corpus

dataset = "novels"
out_dir = "out/novels"
sft_mix = 0.0             # novels only: no Q&A mixed in, so the dataset needs no SFT files
# configs/pretrain.py set `profile`; on the CPU: 10 minutes of a 4 x 256 model on rows of 256 tokens, more and cheaper
# steps than its 6 x 256 model on rows of 512
if profile == "cpu":  # noqa: F821
    n_layer, n_head, n_embd, block_size = 4, 4, 256, 256
    batch_size = 16
    max_iters, epochs, max_seconds = 0, 0.0, 600.0
