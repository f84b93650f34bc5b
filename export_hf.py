"""Export a checkpoint as a stock Hugging Face model, for transformers, a model hub, vLLM or llama.cpp's converter.

    python export_hf.py --out_dir out/sft --output hf/miniglm-jinyong
    python export_hf.py --out_dir out/pretrain --output hf/miniglm-pretrain --dtype bfloat16

The folder loads with AutoModelForCausalLM / AutoTokenizer.from_pretrained(folder), no trust_remote_code:
  config.json              LlamaForCausalLM; Qwen3ForCausalLM when the model has QK-norm (Qwen3 normalises q and
                           k per head before RoPE, where MiniGLM does)
  model.safetensors        the weights under Hugging Face's names (nothing to convert: the layouts are the same)
  generation_config.json   MiniGLM's sampling defaults; generation ends where Engine's does (<|end|>, ...)
  tokenizer.json           made by transformers' converter for tiktoken encodings, so the ids are tiktoken's;
  tokenizer_config.json    for an SFT checkpoint with the chat format as chat_template
Before the folder is swapped in, it is loaded back with transformers and checked: the same ids on a mixed sample,
the same chat prompt, the same logits. What cannot be exported exactly is refused with a one-line error.
"""
import argparse
import base64
import json
import os
import re
import shutil
import tempfile
import time

import torch
from safetensors.torch import save_file

from checkpoint import load_checkpoint
from errors import UserError, run_main
from tokenizer import END, EOT, render_for_reply

# <|endoftext|> starts the document; each turn is <|role|>content<|end|>; the reply follows <|assistant|>
CHAT_TEMPLATE = (
    "<|endoftext|>"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('MiniGLM knows the roles system, user and assistant, not ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
# what the exported tokenizer must encode exactly as MiniGLM's does (scripts, emoji, digits, spaces, role text)
PROBE_TEXT = ("郭靖问黄蓉：「降龙十八掌共有几招？」她笑道：『一十八招。』\n\n  Hello, World! It's 2024-05-17, "
              "we'll pay $3.14 (or ¥22)… naïve café Ünïcödé 🙂👍🏽🇨🇳 \t\r\n<|user|>伪造<|end|><|assistant|> ok\n")
PROBE_CHAT = [{"role": "system", "content": "你是金庸小说专家。"}, {"role": "user", "content": "郭靖的师父是谁？"},
              {"role": "assistant", "content": "江南七怪和洪七公。"}, {"role": "user", "content": "Who is 杨过? 🙂"}]
WEIGHT_NAMES = [(r"embed\.weight", "model.embed_tokens.weight"),
                (r"norm\.weight", "model.norm.weight"),
                (r"lm_head\.weight", "lm_head.weight"),
                (r"blocks\.(\d+)\.input_norm\.weight", r"model.layers.\1.input_layernorm.weight"),
                (r"blocks\.(\d+)\.post_attn_norm\.weight", r"model.layers.\1.post_attention_layernorm.weight"),
                (r"blocks\.(\d+)\.attn\.([qkvo]_proj|[qk]_norm)\.weight", r"model.layers.\1.self_attn.\2.weight"),
                (r"blocks\.(\d+)\.mlp\.(gate_proj|up_proj|down_proj)\.weight", r"model.layers.\1.mlp.\2.weight")]
# every field of GPTConfig and what becomes of it; a field not listed here is something the exporter cannot map
KNOWN_FIELDS = {"vocab_size", "block_size", "n_layer", "n_head", "n_kv_head", "n_embd", "mlp_hidden", "dropout",
                "attn_dropout", "qk_norm", "rope_theta", "tie_embeddings"}
# PreTrainedConfig's fields for other kinds of models (classifiers, encoder-decoders): left out of config.json
GENERIC_FIELDS = {"id2label", "label2id", "problem_type", "chunk_size_feed_forward", "is_encoder_decoder",
                  "output_hidden_states", "output_attentions", "return_dict", "_name_or_path"}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExportError(UserError):
    pass


def hf_weights(model, dtype):
    """MiniGLM's state dict under Hugging Face's names (a tied lm_head is stored once, as the embedding)."""
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.config.tie_embeddings:
            continue
        for pattern, target in WEIGHT_NAMES:
            if re.fullmatch(pattern, name):
                out[re.sub(pattern, target, name)] = tensor.detach().to("cpu", dtype).contiguous()
                break
        else:
            raise ExportError(f"weight {name!r} has no counterpart in a Llama/Qwen3 model; cannot export it")
    return out


def hf_config(model, tok, is_chat, dtype_name):
    """The transformers config: LlamaConfig, or Qwen3Config for QK-norm (its q_norm/k_norm are per-head RMSNorms
    applied before RoPE, exactly MiniGLM's)."""
    from transformers import LlamaConfig, Qwen3Config
    c = model.config
    if c.vocab_size < tok.vocab_size:
        raise ExportError(f"the model's vocab_size {c.vocab_size} is smaller than its tokenizer's {tok.vocab_size}")
    eos = sorted(stop_ids(model, tok))
    common = dict(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=c.mlp_hidden,
                  num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
                  head_dim=c.n_embd // c.n_head, hidden_act="silu", max_position_embeddings=c.block_size,
                  rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": float(c.rope_theta)},
                  tie_word_embeddings=c.tie_embeddings, attention_bias=False, attention_dropout=0.0,
                  bos_token_id=tok.eot_id, eos_token_id=tok.end_id if is_chat else tok.eot_id,
                  pad_token_id=tok.eot_id, use_cache=True)
    if c.qk_norm:
        config = Qwen3Config(**common, use_sliding_window=False, sliding_window=None,
                             max_window_layers=c.n_layer, layer_types=["full_attention"] * c.n_layer)
        config.architectures = ["Qwen3ForCausalLM"]
    else:
        config = LlamaConfig(**common, mlp_bias=False, pretraining_tp=1)
        config.architectures = ["LlamaForCausalLM"]
    d = {k: v for k, v in config.to_dict().items() if k not in GENERIC_FIELDS}
    # older readers (transformers 4.x, vLLM, llama.cpp's convert_hf_to_gguf.py) look for these two keys
    d.update(dtype=dtype_name, torch_dtype=dtype_name, rope_theta=float(c.rope_theta))
    return d, eos


def stop_ids(model, tok):
    """The tokens that end a reply: Engine's own set, so that generation in transformers stops where MiniGLM's does."""
    from engine import Engine
    return set(Engine(model, tok).stop_ids)


def hf_tokenizer(tok, is_chat, block_size, folder):
    """tokenizer.json made by transformers' TikTokenConverter from the tiktoken encoding, and a
    tokenizer_config.json that transformers 4.x and 5.x both read (PreTrainedTokenizerFast)."""
    from tokenizers import processors
    from transformers.convert_slow_tokenizer import TikTokenConverter
    ranks_file = os.path.join(folder, "ranks.tiktoken")  # tiktoken's own file format (its dump needs blobfile)
    with open(ranks_file, "wb") as f:
        for token, rank in sorted(tok.enc._mergeable_ranks.items(), key=lambda kv: kv[1]):
            f.write(base64.b64encode(token) + b" %d\n" % rank)
    specials = sorted(tok.special, key=tok.special.get)
    try:
        converter = TikTokenConverter(vocab_file=ranks_file, pattern=tok.pattern, extra_special_tokens=specials)
        backend = converter.converted()
    except Exception as e:  # e.g. a split pattern the tokenizers library's regex engine cannot compile
        raise ExportError(f"the tokenizer cannot be converted ({type(e).__name__}: {e})") from None
    finally:
        os.remove(ranks_file)
    for name, i in tok.special.items():
        if backend.token_to_id(name) != i:
            raise ExportError(f"special token {name} would get id {backend.token_to_id(name)} instead of {i}")
    # a plain encode starts the document with <|endoftext|>, as Engine's prompts do (apply_chat_template does not
    # add it again: it tokenizes without special tokens, and the template writes it)
    backend.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B",
                                                           special_tokens=[(EOT, tok.eot_id)])
    backend.save(os.path.join(folder, "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": END if is_chat else EOT,
              "pad_token": EOT, "additional_special_tokens": [t for t in specials if t not in (EOT, END)],
              "clean_up_tokenization_spaces": False, "model_max_length": block_size}
    if is_chat:
        config["chat_template"] = CHAT_TEMPLATE
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)


@torch.no_grad()
def all_logits(model, ids):
    """MiniGLM's logits at every position of ids (its forward returns only the last, or the loss): the final
    norm's output, caught on the way, through the output layer."""
    seen = []
    hook = model.norm.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        model(ids)
    finally:
        hook.remove()
    return model.lm_head(seen[-1]).float()


def check_export(folder, model, tok, is_chat):
    """Load the export with transformers and compare it with MiniGLM: ids, chat prompt, logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging
    logging.disable_progress_bar()
    hf_tok = AutoTokenizer.from_pretrained(folder, model_max_length=10 ** 9)  # no warning on the long probe
    got = hf_tok(PROBE_TEXT, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if got != tok.encode(PROBE_TEXT):
        raise ExportError("the converted tokenizer splits text differently from MiniGLM's; cannot export it exactly")
    if is_chat:
        got = hf_tok.apply_chat_template(PROBE_CHAT, add_generation_prompt=True, tokenize=True)
        got = got["input_ids"] if hasattr(got, "keys") else got  # a BatchEncoding in transformers 5
        if list(got) != render_for_reply(tok, PROBE_CHAT, 10 ** 9):
            raise ExportError("the chat template renders a conversation differently from MiniGLM's chat format")
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([([tok.eot_id] + tok.encode(PROBE_TEXT))[:model.config.block_size]])
    want = all_logits(model, ids)
    with torch.no_grad():
        have = hf_model(ids).logits.float()
    diff = (want - have).abs().max().item()
    if diff > 1e-4:
        raise ExportError(f"the exported model's logits differ from MiniGLM's by {diff:.2g}; cannot export it exactly")
    return diff


def export(out_dir, output, dtype_name="float32", check=True):
    """Write the Hugging Face folder at output (built beside it, swapped in whole). Returns the check's logit
    difference (None without the check)."""
    if dtype_name not in DTYPES:
        raise ExportError(f"--dtype {dtype_name}: expected one of {', '.join(DTYPES)}")
    dtype = DTYPES[dtype_name]
    output = os.path.normpath(output)
    if os.path.exists(output) and not os.path.isfile(os.path.join(output, "config.json")):
        raise ExportError(f"{output} exists and is not an earlier export (no config.json); choose another --output")
    model, tok, info, folder = load_checkpoint(out_dir, "cpu")
    unknown = set(info["model"]) - KNOWN_FIELDS  # the model loads without them, but they may change what it computes
    if unknown:
        raise ExportError(f"{folder}/config.json: model settings {sorted(unknown)} have no counterpart in "
                          "export_hf.py; cannot export exactly")
    with torch.no_grad():  # the weights as they will be stored, so that the check compares like with like
        for p in model.float().parameters():
            p.copy_(p.to(dtype).float())
    is_chat = info.get("task") == "sft"
    config, eos = hf_config(model, tok, is_chat, dtype_name)
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp", dir=parent)
    try:
        hf_tokenizer(tok, is_chat, model.config.block_size, tmp)
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
        generation = {"bos_token_id": tok.eot_id, "eos_token_id": eos, "pad_token_id": tok.eot_id,
                      "do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.9, "max_new_tokens": 256}
        # no repetition_penalty: transformers applies it to the prompt's tokens too, Engine to the reply's only
        with open(os.path.join(tmp, "generation_config.json"), "w", encoding="utf-8") as f:
            json.dump(generation, f, indent=2)
        save_file(hf_weights(model, dtype), os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(tmp, "miniglm.json"), "w", encoding="utf-8") as f:  # where it came from
            json.dump({"source": os.path.abspath(folder), "task": info.get("task"), "step": info.get("step"),
                       "model": model.config.to_dict()}, f, ensure_ascii=False, indent=2)
        diff = check_export(tmp, model, tok, is_chat) if check else None
        old = output + ".old"
        if os.path.exists(output):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output, old)
        os.replace(tmp, output)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, config["architectures"][0], diff


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out_dir", default="out/sft", help="checkpoint or run folder")
    ap.add_argument("--output", required=True, help="folder to write (replaced whole if it is an earlier export)")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES), help="dtype of the exported weights")
    ap.add_argument("--no_check", action="store_true", help="skip loading the export back to compare it")
    args = ap.parse_args()
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ExportError("export_hf.py needs transformers: pip install -r requirements.txt") from None
    t0 = time.perf_counter()
    folder, arch, diff = export(args.out_dir, args.output, args.dtype, check=not args.no_check)
    checked = "" if diff is None else f"; checked against MiniGLM: same token ids, logits within {diff:.1g}"
    print(f"exported {folder} as {arch} to {args.output} in {time.perf_counter() - t0:.1f}s{checked}")


if __name__ == "__main__":
    run_main(main)
