"""Chat with a trained model in the browser.

    python app.py                       # http://127.0.0.1:7860, the checkpoints under out/
    python app.py --out_dir out/sft --port 8000 --host 0.0.0.0      # --host 0.0.0.0 lets other machines in
"""
import argparse
import os
import threading
from collections import OrderedDict

import gradio as gr

from checkpoint import CheckpointError, find_checkpoint
from data_utils import COURSE_QUESTIONS
from engine import Engine, SamplingParams
from errors import UserError, run_main
from model import pick_device

MAX_MESSAGE_CHARS = 1000
NO_MODEL = ("还没有可用的模型。No trained checkpoint was found under `{root}/`. Make one with:\n\n"
            "```\npython prepare.py && python prepare_sft.py\npython train.py config/pretrain.py\n"
            "python train.py config/sft.py\n```\n\nor simply `bash run.sh`, then restart `python app.py`.")


def find_checkpoints(root):
    """Run or checkpoint folders under root that hold a model, SFT (chat) runs first."""
    found = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            run = os.path.join(root, name)
            for sub in ("best", "latest", ""):
                if os.path.isfile(os.path.join(run, sub, "model.safetensors")):
                    found.append(run)
                    break
    return sorted(found, key=lambda p: (not os.path.basename(p).startswith("sft"), p))


def message_text(content):
    """Text of a chat message whatever shape the UI gives (a string, or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content.get("text", "") or ""
    if isinstance(content, (list, tuple)):
        return "".join(message_text(c) for c in content)
    return ""


def is_within(path, folder):
    """Whether path is folder or inside it; both are real paths (symbolic links and '..' resolved)."""
    return os.path.commonpath([path, folder]) == folder


class ChatBackend:
    """Answers with the checkpoints under root (and the one the owner named with --out_dir), nothing else: a
    client can type any path into the checkpoint box. Engines are cached by the real path of the checkpoint folder
    (so many spellings of one path load it once) in a small LRU; the lock guards the cache and loading only,
    never generation."""

    def __init__(self, root, device="auto", default=None, cache_size=2):
        self.root, self.device, self.cache_size = root, device, cache_size
        self.allowed = [os.path.realpath(root)] + ([os.path.realpath(default)] if default else [])
        self.engines, self.lock = OrderedDict(), threading.Lock()

    def permitted(self, path):
        try:
            real = os.path.realpath(path)
        except (TypeError, ValueError):  # not a string, or one with a NUL in it
            return False
        return any(is_within(real, folder) for folder in self.allowed)

    def engine(self, path):
        """The Engine for a checkpoint or run folder under root; CheckpointError for anything else."""
        if not self.permitted(path):
            raise CheckpointError(f"{path}: not under {self.root}/")
        try:
            found = find_checkpoint(os.path.realpath(path))
        except CheckpointError:
            raise CheckpointError(f"{path}: no checkpoint there") from None
        key = os.path.realpath(found)
        if not self.permitted(key):  # e.g. a best/ that is a symbolic link to elsewhere
            raise CheckpointError(f"{path}: not under {self.root}/")
        with self.lock:
            if key in self.engines:
                self.engines.move_to_end(key)
                return self.engines[key]
            while len(self.engines) >= self.cache_size:
                self.engines.popitem(last=False)  # the least recently used
            try:
                engine = Engine.from_checkpoint(key, self.device)
            except CheckpointError as e:  # say it in the client's words, not the server's absolute paths
                raise CheckpointError(str(e).replace(key, path)) from None
            self.engines[key] = engine
            return engine

    def respond(self, message, history, checkpoint, temperature, top_k, top_p, max_new_tokens):
        text = message_text(message).strip()
        if not text:
            yield "请输入一个问题。(Please type a question.)"
            return
        if len(text) > MAX_MESSAGE_CHARS:
            yield f"这个问题太长了（{len(text)} 字），请控制在 {MAX_MESSAGE_CHARS} 字以内。"
            return
        if not checkpoint:
            yield NO_MODEL.format(root=self.root)
            return
        if not isinstance(checkpoint, str) or not self.permitted(checkpoint):
            yield (f"只能使用 `{self.root}/` 下列出的模型。Only the checkpoints under `{self.root}/` can be chosen; "
                   "please pick one from the list.")
            return
        try:
            params = SamplingParams(max_new_tokens=int(max_new_tokens), temperature=float(temperature),
                                    top_k=int(top_k), top_p=float(top_p))
            engine = self.engine(checkpoint)
        except (UserError, TypeError, ValueError) as e:
            yield f"无法加载模型 `{checkpoint}`：{e}" if isinstance(e, CheckpointError) else f"设置有误：{e}"
            return
        messages = []
        for m in history if isinstance(history, list) else []:
            if not isinstance(m, dict):
                continue
            role, content = m.get("role"), message_text(m.get("content")).strip()
            if role in ("user", "assistant") and content:
                messages.append({"role": role, "content": content})
        # keep strict user/assistant alternation (a failed or stopped turn can leave two users in a row)
        clean = []
        for m in messages:
            if clean and clean[-1]["role"] == m["role"]:
                clean[-1] = m
            else:
                clean.append(m)
        if clean and clean[-1]["role"] == "user":
            clean.pop()
        clean.append({"role": "user", "content": text})
        reply = ""
        for piece in engine.stream(clean, params):
            reply += piece
            yield reply
        if not reply.strip():
            yield "（模型没有给出回答，可以换个问法或调高 temperature 再试。）"


def build_app(root="out", default=None, device="auto", concurrency=1):
    checkpoints = find_checkpoints(root)
    if default and default not in checkpoints:
        checkpoints.insert(0, default)
    backend = ChatBackend(root, device, default)
    if checkpoints:
        description = ("MiniGLM：一个从零训练的小模型，回答关于《射雕英雄传》《神雕侠侣》《天龙八部》的问题。"
                       "A small model trained from scratch on MiniGLM's Jin Yong data.")
    else:
        description = NO_MODEL.format(root=root)
    with gr.Blocks(title="MiniGLM") as demo:
        checkpoint = gr.Dropdown(choices=checkpoints, value=checkpoints[0] if checkpoints else None,
                                 label="checkpoint", allow_custom_value=True, render=False)
        d = SamplingParams()
        sliders = [gr.Slider(0.0, 1.5, value=d.temperature, step=0.05, label="temperature (0 = greedy)",
                             render=False),
                   gr.Slider(0, 200, value=d.top_k, step=1, label="top-k (0 = off)", render=False),
                   gr.Slider(0.1, 1.0, value=d.top_p, step=0.05, label="top-p", render=False),
                   gr.Slider(16, 512, value=d.max_new_tokens, step=16, label="max new tokens", render=False)]
        gr.ChatInterface(backend.respond, title="MiniGLM 金庸问答", description=description,
                         additional_inputs=[checkpoint] + sliders, additional_inputs_accordion="设置 Settings",
                         # gradio wants every input's value in an example when there are additional inputs
                         examples=[[q, checkpoint.value, d.temperature, d.top_k, d.top_p, d.max_new_tokens]
                                   for q in COURSE_QUESTIONS] if checkpoints
                         else None, cache_examples=False, concurrency_limit=concurrency, api_name="chat")
    demo.queue(default_concurrency_limit=concurrency)
    return demo


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out_dir", default=None, help="checkpoint to open first (default: the first SFT run in out/)")
    ap.add_argument("--root", default="out", help="folder whose runs appear in the checkpoint list")
    ap.add_argument("--host", default="127.0.0.1", help="0.0.0.0 serves other machines too")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--concurrency", type=int, default=1, help="replies generated at once; others wait in a queue")
    args = ap.parse_args()
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected 1 to 65535")
    pick_device(args.device)  # a device this machine lacks is one line, not an error in every reply
    if args.out_dir:
        find_checkpoint(args.out_dir)  # a mistyped --out_dir is one line, not a failing first choice in the list
    demo = build_app(args.root, args.out_dir, args.device, args.concurrency)
    print(f"MiniGLM chat: http://{args.host}:{args.port}", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    run_main(main)
